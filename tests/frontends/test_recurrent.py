"""RNN, LSTM and GRU over several steps against NumPy loops with PyTorch's gate order."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.errors import ShapeError
from lbdl_graph.frontends import nn, trace

from .helpers import rand, run_model, sigmoid_ref


def _params(m, layer, sfx=""):
    get = lambda n: getattr(m, f"{n}_l{layer}{sfx}").data  # noqa: E731
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")


def _rnn_step(x, h, p, kind, c=None):
    w_ih, w_hh, b_ih, b_hh = p
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if kind == "rnn":
        return np.tanh(gi + gh), None
    if kind == "lstm":
        i, f, g, o = np.split(gi + gh, 4, -1)
        c = sigmoid_ref(f) * c + sigmoid_ref(i) * np.tanh(g)
        return sigmoid_ref(o) * np.tanh(c), c
    r = sigmoid_ref(gi[:, :h.shape[1]] + gh[:, :h.shape[1]])
    z = sigmoid_ref(gi[:, h.shape[1]:2 * h.shape[1]] + gh[:, h.shape[1]:2 * h.shape[1]])
    n = np.tanh(gi[:, 2 * h.shape[1]:] + r * gh[:, 2 * h.shape[1]:])
    return (1 - z) * n + z * h, None


def _ref(m, x, kind, h0=None, c0=None):
    """Sequence-first reference for any layers/directions."""
    dirs = 2 if m.bidirectional else 1
    hs, cs = [], []
    seq = list(x)
    for layer in range(m.num_layers):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][:dirs]):
            i = layer * dirs + d
            h = np.zeros((x.shape[1], m.hidden_size), np.float32) if h0 is None else h0[i]
            c = np.zeros_like(h) if c0 is None else c0[i]
            ys = [None] * len(seq)
            order = range(len(seq) - 1, -1, -1) if sfx else range(len(seq))
            for t in order:
                h, c = _rnn_step(seq[t], h, _params(m, layer, sfx), kind, c)
                ys[t] = h
            outs.append(ys)
            hs.append(h)
            cs.append(c)
        seq = [np.concatenate(step, -1) for step in zip(*outs, strict=True)]
    return np.stack(seq), np.stack(hs), (np.stack(cs) if kind == "lstm" else None)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_single_layer_over_several_steps(kind):
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    m = cls(3, 4)
    x = rand(5, 2, 3)
    out = run_model(m, x)
    ref_out, ref_h, ref_c = _ref(m, x, kind)
    np.testing.assert_allclose(out["output0"], ref_out, rtol=1e-4, atol=1e-5)
    if kind == "lstm":
        np.testing.assert_allclose(out["output1"], ref_h, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["output2"], ref_c, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(out["output1"], ref_h, rtol=1e-4, atol=1e-5)


def test_lstm_two_layers_bidirectional_batch_first_with_initial_state():
    m = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    x = rand(2, 6, 3)
    h0, c0 = rand(4, 2, 4), rand(4, 2, 4)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = m

        def forward(self, x, h, c):
            return self.lstm(x, (h, c))

    out = run_model(Wrap(), x, h0, c0)
    ref_out, ref_h, ref_c = _ref(m, x.transpose(1, 0, 2), "lstm", h0, c0)
    np.testing.assert_allclose(out["output0"], ref_out.transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"], ref_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output2"], ref_c, rtol=1e-4, atol=1e-5)
    assert [n for n, _ in m.named_parameters()][:5] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse"]
    assert m.weight_ih_l1.shape == (16, 8)


def test_gru_symbolic_batch_and_stacked_layers():
    m = nn.GRU(3, 5, num_layers=2)
    x = rand(4, 3, 3)
    g = trace(m, [(4, "N", 3)])
    assert g.outputs[0].type.shape == (4, "N", 5)
    out = run_model(m, x, symbolic=False)
    ref_out, ref_h, _ = _ref(m, x, "gru")
    np.testing.assert_allclose(out["output0"], ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"], ref_h, rtol=1e-4, atol=1e-5)


def test_rnn_relu_without_bias_and_errors():
    m = nn.RNN(2, 3, nonlinearity="relu", bias=False)
    assert [n for n, _ in m.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    x = rand(3, 1, 2)
    h = np.zeros((1, 3), np.float32)
    for t in range(3):
        h = np.maximum(x[t] @ m.weight_ih_l0.data.T + h @ m.weight_hh_l0.data.T, 0)
    np.testing.assert_allclose(run_model(m, x)["output1"][0], h, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="unroll=True needs a static"):
        trace(nn.RNN(2, 3, unroll=True), [("T", 1, 2)])
    with pytest.raises(ShapeError, match="H_in=2"):
        trace(m, [(3, 1, 4)])
