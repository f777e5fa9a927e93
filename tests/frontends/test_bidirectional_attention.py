"""Bidirectional GRU/LSTM/RNN against torch.nn with copied weights, and additive attention."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.errors import DTypeError, ShapeError
from lbdl_graph.frontends import nn, trace
from lbdl_graph.passes.autodiff import grad

from .helpers import rand, run_model


@pytest.mark.parametrize(("kind", "layers", "batch_first"),
                         [("gru", 1, True), ("lstm", 2, False), ("rnn", 2, True)])
def test_bidirectional_matches_torch(kind: str, layers: int, batch_first: bool) -> None:
    torch = pytest.importorskip("torch")
    ours_cls = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[kind]
    theirs_cls = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind]
    m = ours_cls(3, 5, num_layers=layers, batch_first=batch_first, bidirectional=True)
    ref = theirs_cls(3, 5, num_layers=layers, batch_first=batch_first, bidirectional=True)
    names = [n for n, _ in ref.named_parameters()]
    assert names == [n for n, _ in m.named_parameters()]
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(getattr(m, n).data)))
    x = rand(2, 6, 3) if batch_first else rand(6, 2, 3)
    out = run_model(m, x)
    with torch.no_grad():
        t_out, t_h = ref(torch.from_numpy(x))
    np.testing.assert_allclose(out["output0"], t_out.numpy(), rtol=1e-4, atol=1e-5)
    t_h = t_h if kind != "lstm" else t_h[0]
    np.testing.assert_allclose(out["output1"], t_h.numpy(), rtol=1e-4, atol=1e-5)
    assert out["output0"].shape[-1] == 10  # both directions concatenated


def _attn_ref(m: nn.AdditiveAttention, q: np.ndarray, k: np.ndarray,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    wq, wk, bk = m.query_proj.weight.data, m.key_proj.weight.data, m.key_proj.bias.data
    v = m.v.weight.data[0]
    scores = np.tanh(k @ wk.T + bk + (q @ wq.T)[:, None]) @ v  # (N, L)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    w = np.exp(scores - scores.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return (w[:, :, None] * k).sum(1), w


def test_additive_attention_matches_formula_and_mask() -> None:
    m = nn.AdditiveAttention(4, 6, 8)
    q, k = rand(3, 4), rand(3, 5, 6)
    out = run_model(m, q, k)
    ctx, w = _attn_ref(m, q, k)
    np.testing.assert_allclose(out["output0"], ctx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"].sum(1), 1.0, rtol=1e-5)
    mask = np.ones((3, 5), bool)
    mask[:, 3:] = False

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = m

        def forward(self, q: object, k: object) -> object:
            return self.a(q, k, mask=mask)

    out = run_model(Masked(), q, k)
    ctx, w = _attn_ref(m, q, k, mask)
    np.testing.assert_allclose(out["output0"], ctx, rtol=1e-4, atol=1e-5)
    assert np.all(out["output1"][:, 3:] == 0)


def test_additive_attention_gradients_and_errors() -> None:
    m = nn.AdditiveAttention(4, 6, 8)
    g = trace(m, [(2, 4), (2, 5, 6)])
    assert g.outputs[0].type.shape == (2, 6) and g.outputs[1].type.shape == (2, 5)
    params = {n for n, _ in m.named_parameters()}
    assert params == {"query_proj.weight", "key_proj.weight", "key_proj.bias", "v.weight"}
    from lbdl_graph import GraphBuilder, ops

    b = GraphBuilder.from_graph(g)
    with b:
        loss = ops.reduce_sum(ops.mul(g.outputs[0], g.outputs[0]), axes=None, keepdims=False)
    gg = grad(b.build({"loss": loss}))
    assert {f"grad:{p}" for p in params} <= set(gg.values)
    with pytest.raises(ShapeError, match="query must be"):
        trace(m, [(2, 3), (2, 5, 6)])
    with pytest.raises(ShapeError, match="keys must be"):
        trace(m, [(2, 4), (2, 5, 7)])

    class BadMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = m

        def forward(self, q: object, k: object) -> object:
            return self.a(q, k, mask=np.ones((2, 5), np.float32))

    with pytest.raises(DTypeError, match="mask must be bool"):
        trace(BadMask(), [(2, 4), (2, 5, 6)])
