"""The functional API: losses, padding, joins and splits, one-hot and helpers."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import OpError, ShapeError
from lbdl_graph.frontends import F, trace

from .helpers import rand, softmax_ref


def _eval(fn, *arrays):
    g = trace(fn, list(arrays))
    names = [v.name for v in g.inputs]
    out = run(g, dict(zip(names, arrays, strict=True)))
    return out["output"] if "output" in out else [out[f"output{i}"] for i in range(len(out))]


def _logp(x, axis=1):
    return np.log(softmax_ref(x, axis))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_class_indices(reduction):
    x = rand(5, 4)
    t = np.array([0, 3, 1, 1, 2], dtype=np.int64)
    out = _eval(lambda a, b: F.cross_entropy(a, b, reduction=reduction), x, t)
    per = -_logp(x)[np.arange(5), t]
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_cross_entropy_label_smoothing_spatial_and_probability_targets():
    x = rand(2, 3, 4)  # (N, C, d)
    t = np.array([[0, 1, 2, 2], [1, 1, 0, 2]], dtype=np.int64)
    out = _eval(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.2), x, t)
    logp = _logp(x)
    nll = -np.take_along_axis(logp, t[:, None], 1)[:, 0]
    ref = (0.8 * nll + 0.2 * -logp.mean(1)).mean()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    p = softmax_ref(rand(2, 3, 4), 1)
    out = _eval(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1), x, p)
    ref = -((p * 0.9 + 0.1 / 3) * logp).sum(1).mean()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_class_weights_divide_the_mean_by_the_total_target_weight():
    x = rand(5, 3)
    t = np.array([0, 2, 1, 2, 2], dtype=np.int64)
    w = np.array([0.5, 2.0, 1.5], dtype=np.float32)
    logp = _logp(x)
    nll = -logp[np.arange(5), t]
    out = _eval(lambda a, b: F.cross_entropy(a, b, w), x, t)
    np.testing.assert_allclose(out, (w[t] * nll).sum() / w[t].sum(), rtol=1e-5)
    out = _eval(lambda a, b: F.cross_entropy(a, b, w, label_smoothing=0.3), x, t)
    smooth = -(logp * w).sum(1) / 3
    ref = (0.7 * w[t] * nll + 0.3 * smooth).sum() / w[t].sum()
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    out = _eval(lambda a, b: F.nll_loss(a, b, w, reduction="sum"), logp, t)
    np.testing.assert_allclose(out, (w[t] * nll).sum(), rtol=1e-5)
    p = softmax_ref(rand(5, 3))
    out = _eval(lambda a, b: F.cross_entropy(a, b, w), x, p)
    np.testing.assert_allclose(out, -(p * w * logp).sum(1).mean(), rtol=1e-5)


def test_nll_and_mse_and_l1():
    logp = _logp(rand(4, 3))
    t = np.array([2, 0, 1, 2], dtype=np.int64)
    np.testing.assert_allclose(_eval(F.nll_loss, logp, t), -logp[np.arange(4), t].mean(),
                               rtol=1e-5)
    a, b = rand(3, 2), rand(3, 2)
    np.testing.assert_allclose(_eval(F.mse_loss, a, b), ((a - b) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(_eval(lambda x, y: F.l1_loss(x, y, reduction="sum"), a, b),
                               np.abs(a - b).sum(), rtol=1e-5)


def test_binary_cross_entropy_is_stable_and_supports_pos_weight():
    x = np.array([[-100.0, -2.0, 0.0, 3.0, 80.0]], dtype=np.float32)
    y = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]], dtype=np.float32)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    ref = np.maximum(x64, 0) - x64 * y64 + np.log1p(np.exp(-np.abs(x64)))
    out = _eval(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"), x, y)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    pw = np.array([2.0, 1.0, 3.0, 1.0, 0.5], dtype=np.float32)
    out = _eval(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none",
                                                       pos_weight=pw),
                x, y)
    finite = np.abs(x64) < 50  # the naive formula overflows outside this range
    xf, yf = x64[finite], y64[finite]
    sig = 1 / (1 + np.exp(-xf))
    ref = -(pw[finite[0]] * yf * np.log(sig) + (1 - yf) * np.log(1 - sig))
    np.testing.assert_allclose(out[finite], ref, rtol=1e-4, atol=1e-5)
    p = 1 / (1 + np.exp(-rand(3, 2)))
    t = (rand(3, 2) > 0).astype(np.float32)
    np.testing.assert_allclose(_eval(F.binary_cross_entropy, p, t),
                               -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(), rtol=1e-5)


def test_loss_errors_are_typed():
    with pytest.raises(ShapeError, match="target"):
        _eval(F.cross_entropy, rand(4, 3), np.zeros(5, np.int64))
    with pytest.raises(ShapeError, match="same shape"):
        _eval(F.mse_loss, rand(2, 3), rand(3, 2))
    with pytest.raises(OpError, match="reduction"):
        _eval(lambda a, b: F.mse_loss(a, b, reduction="avg"), rand(2), rand(2))


def test_one_hot_pad_cat_stack_split_chunk_where():
    idx = np.array([[2, 0], [1, 3]], dtype=np.int64)
    out = _eval(lambda i: F.one_hot(i, 4), idx)
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.int64)[idx])
    x = rand(2, 3, 4)
    np.testing.assert_array_equal(_eval(lambda a: F.pad(a, (1, 2)), x),
                                  np.pad(x, [(0, 0), (0, 0), (1, 2)]))
    np.testing.assert_array_equal(_eval(lambda a: F.pad(a, (1, 0, 0, 2), mode="replicate"), x),
                                  np.pad(x, [(0, 0), (0, 2), (1, 0)], mode="edge"))
    np.testing.assert_array_equal(_eval(lambda a: F.pad(a, (2, 1), mode="reflect", value=0), x),
                                  np.pad(x, [(0, 0), (0, 0), (2, 1)], mode="reflect"))
    np.testing.assert_array_equal(_eval(lambda a: F.cat([a, a * 2], -1), x),
                                  np.concatenate([x, x * 2], -1))
    np.testing.assert_array_equal(_eval(lambda a: F.stack([a, -a], 1), x), np.stack([x, -x], 1))
    pieces = _eval(lambda a: F.split(a, 3, dim=2), x)
    for p, r in zip(pieces, np.split(x, [3], axis=2), strict=True):
        np.testing.assert_array_equal(p, r)
    pieces = _eval(lambda a: tuple(a.chunk(2, 1)), x)
    assert [p.shape for p in pieces] == [(2, 2, 4), (2, 1, 4)]
    np.testing.assert_array_equal(_eval(lambda a: F.where(a > 0, a, 0.0), x),
                                  np.where(x > 0, x, 0))
    np.testing.assert_array_equal(_eval(lambda a: F.zeros_like(a) + F.ones_like(a), x),
                                  np.ones_like(x))


def test_functional_activations_and_linear():
    x = rand(3, 4)
    w, b = rand(2, 4), rand(2)
    np.testing.assert_allclose(_eval(lambda a: F.linear(a, w, b), x), x @ w.T + b, rtol=1e-5)
    np.testing.assert_allclose(_eval(lambda a: F.softplus(a), x), np.log1p(np.exp(x)),
                               rtol=1e-5)
    np.testing.assert_allclose(_eval(lambda a: F.log_softmax(a, 0), x), _logp(x, 0), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ShapeError, match="in_features=2"):
        _eval(lambda a: F.linear(a, w.T), x)


def test_conv_functional_validation():
    with pytest.raises(ShapeError, match="stride 1"):
        _eval(lambda a: F.conv1d(a, rand(2, 3, 3), stride=2, padding="same"), rand(1, 3, 8))
    with pytest.raises(OpError, match="return_indices"):
        _eval(lambda a: F.max_pool2d(a, 2, return_indices=True), rand(1, 1, 4, 4))
