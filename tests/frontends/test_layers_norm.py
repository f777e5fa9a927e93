"""Normalisation and dropout layers: eval and training semantics, running-stat updates."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import Module, nn, trace

from .helpers import rand, run_model


def _bn_with_state(c: int, cls=nn.BatchNorm2d, **kw):
    bn = cls(c, **kw)
    gen = np.random.default_rng(5)
    if bn.affine:
        bn.weight.data[...] = gen.uniform(0.5, 1.5, c)
        bn.bias.data[...] = gen.normal(size=c)
    if bn.track_running_stats:
        bn.running_mean.data[...] = gen.normal(size=c)
        bn.running_var.data[...] = gen.uniform(0.5, 2.0, c)
        bn.num_batches_tracked.data[...] = 4
    return bn


def _bn_ref(x, mean, var, w, b, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) \
        + b.reshape(shape)


def test_batchnorm_eval_uses_running_statistics():
    bn = _bn_with_state(3).eval()
    x = rand(4, 3, 5, 5)
    g = trace(bn, [("N", 3, 5, 5)])
    assert [n.op.name for n in g.nodes] == ["batch_norm", "identity"]
    assert "state_updates" not in g.metadata
    out = run(g, {"x": x})["output"]
    ref = _bn_ref(x, bn.running_mean.data, bn.running_var.data, bn.weight.data, bn.bias.data)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic-batch"])
def test_batchnorm_train_uses_batch_stats_and_outputs_running_stat_updates(symbolic):
    class Net(Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn1 = _bn_with_state(3)

        def forward(self, x):
            return self.bn1(x)

    net = Net()
    x = rand(4, 3, 2, 5) * 2 + 1
    g = trace(net, [("N" if symbolic else 4, 3, 2, 5)])
    assert g.metadata["state_updates"] == {
        "bn1.num_batches_tracked": "bn1.num_batches_tracked:next",
        "bn1.running_mean": "bn1.running_mean:next",
        "bn1.running_var": "bn1.running_var:next",
    }
    assert g.output_names() == ["output", "bn1.num_batches_tracked:next",
                                "bn1.running_mean:next", "bn1.running_var:next"]
    out = run(g, {"x": x})
    mean = x.mean((0, 2, 3))
    var = x.var((0, 2, 3))
    bn = net.bn1
    np.testing.assert_allclose(out["output"], _bn_ref(x, mean, var, bn.weight.data,
                                                      bn.bias.data), rtol=1e-4, atol=1e-5)
    n = 4 * 2 * 5
    np.testing.assert_allclose(out["bn1.running_mean:next"],
                               0.9 * bn.running_mean.data + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["bn1.running_var:next"],
                               0.9 * bn.running_var.data + 0.1 * var * n / (n - 1), rtol=1e-5)
    assert out["bn1.num_batches_tracked:next"] == 5
    assert out["bn1.num_batches_tracked:next"].dtype == np.int64


def test_batchnorm_cumulative_average_when_momentum_is_none():
    bn = _bn_with_state(2, nn.BatchNorm1d, momentum=None)
    x = rand(6, 2)
    g = trace(bn, [x.shape])
    out = run(g, {"x": x})
    factor = 1 / 5  # num_batches_tracked goes from 4 to 5
    np.testing.assert_allclose(out["running_mean:next"],
                               (1 - factor) * bn.running_mean.data + factor * x.mean(0),
                               rtol=1e-5, atol=1e-6)


def test_batchnorm1d_sequences_and_no_tracking():
    bn = _bn_with_state(3, nn.BatchNorm1d).eval()
    x = rand(2, 3, 7)
    ref = _bn_ref(x, bn.running_mean.data, bn.running_var.data, bn.weight.data, bn.bias.data)
    np.testing.assert_allclose(run_model(bn, x), ref, rtol=1e-5, atol=1e-5)
    free = nn.BatchNorm1d(3, affine=False, track_running_stats=False).eval()
    g = trace(free, [x.shape])
    assert g.output_names() == ["output"] and not list(free.buffers())
    ones, zeros = np.ones(3), np.zeros(3)
    np.testing.assert_allclose(run(g, {"x": x})["output"],
                               _bn_ref(x, x.mean((0, 2)), x.var((0, 2)), ones, zeros),
                               rtol=1e-4, atol=1e-5)


def test_layer_norm_over_one_and_two_dims():
    x = rand(2, 3, 4) * 3 + 1
    ln = nn.LayerNorm(4)
    ln.weight.data[...] = np.arange(4) + 1.0
    ln.bias.data[...] = -0.5
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(run_model(ln, x, symbolic=True),
                               (x - mu) / np.sqrt(var + 1e-5) * ln.weight.data - 0.5,
                               rtol=1e-4, atol=1e-5)
    ln2 = nn.LayerNorm((3, 4), elementwise_affine=False, eps=1e-3)
    mu, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(run_model(ln2, x), (x - mu) / np.sqrt(var + 1e-3), rtol=1e-4,
                               atol=1e-5)


def test_dropout_keep_rate_scaling_and_key_dependence():
    drop = nn.Dropout(0.3)
    x = np.ones((200, 100), dtype=np.float32)
    a = run_model(drop, x, rng_key=(7, 0))
    dropped = (a == 0).mean()
    assert abs(dropped - 0.3) < 0.02
    np.testing.assert_allclose(a[a != 0], 1 / 0.7, rtol=1e-6)
    b = run_model(drop, x, rng_key=(7, 1))
    assert (a != b).any()
    np.testing.assert_array_equal(a, run_model(drop, x, rng_key=(7, 0)))
    np.testing.assert_array_equal(run_model(drop.eval(), x), x)


def test_two_dropout_layers_draw_independent_masks():
    model = nn.Sequential(nn.Dropout(0.5), nn.Dropout(0.5))
    x = np.ones((100, 100), dtype=np.float32)
    out = run_model(model, x)
    # with independent masks about a quarter of the entries survive (scaled by 4)
    assert abs((out != 0).mean() - 0.25) < 0.03
    np.testing.assert_allclose(out[out != 0], 4.0, rtol=1e-6)


def test_dropout2d_drops_whole_channels():
    drop = nn.Dropout2d(0.4)
    x = np.ones((40, 50, 3, 2), dtype=np.float32)
    out = run_model(drop, x, rng_key=(1, 2))
    per_channel = out.reshape(40, 50, -1)
    zero = (per_channel == 0).all(-1)
    kept = (per_channel == np.float32(1 / 0.6)).all(-1)
    assert (zero | kept).all()
    assert abs(zero.mean() - 0.4) < 0.03
    g = trace(drop, [("N", 50, 3, 2)])
    (rnd,) = [n for n in g.nodes if n.op.name == "random_uniform"]
    assert rnd.inputs[0].type.shape == ("N", 50, 1, 1)
    np.testing.assert_array_equal(run_model(drop.eval(), x), x)


def test_dropout_probability_edges():
    x = rand(4, 4)
    np.testing.assert_array_equal(run_model(nn.Dropout(0.0), x), x)
    np.testing.assert_array_equal(run_model(nn.Dropout(1.0), x), np.zeros_like(x))
