"""Scaled dot-product attention and MultiheadAttention against a NumPy implementation."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import F, InputSpec, nn, trace

from .helpers import rand, softmax_ref


def _sdpa_ref(q, k, v, keep=None, bias=None, causal=False, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    if causal:
        L, S = s.shape[-2:]
        tri = np.tril(np.ones((L, S), dtype=bool))
        keep = tri if keep is None else keep & tri
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    w = softmax_ref(s)
    return w @ v, w


def _qkv(*lead, L=5, S=6, E=4, Ev=3):
    return rand(*lead, L, E), rand(*lead, S, E), rand(*lead, S, Ev)


def test_sdpa_plain_and_scaled():
    q, k, v = _qkv(2, 3)
    g = trace(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), [q, k, v])
    out = run(g, {"a": q, "b": k, "c": v})["output"]
    np.testing.assert_allclose(out, _sdpa_ref(q, k, v)[0], rtol=1e-5, atol=1e-6)
    g = trace(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=0.3), [q, k, v])
    out = run(g, {"a": q, "b": k, "c": v})["output"]
    np.testing.assert_allclose(out, _sdpa_ref(q, k, v, scale=0.3)[0], rtol=1e-5, atol=1e-6)


def test_sdpa_with_bool_and_float_masks():
    q, k, v = _qkv(2)
    keep = np.random.default_rng(3).random((5, 6)) > 0.4
    keep[:, 0] = True  # no fully masked rows
    bias = rand(5, 6)
    g = trace(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, attn_mask=m),
              [q, k, v, keep])
    out = run(g, {"a": q, "b": k, "c": v, "m": keep})["output"]
    np.testing.assert_allclose(out, _sdpa_ref(q, k, v, keep=keep)[0], rtol=1e-5, atol=1e-6)
    g = trace(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=bias),
              [q, k, v])
    out = run(g, {"a": q, "b": k, "c": v})["output"]
    np.testing.assert_allclose(out, _sdpa_ref(q, k, v, bias=bias)[0], rtol=1e-5, atol=1e-6)


def test_sdpa_causal_mask_works_with_a_symbolic_sequence_length():
    g = trace(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
              [("B", "T", 4), ("B", "T", 4), ("B", "T", 2)])
    assert g.outputs[0].type.shape == ("B", "T", 2)
    assert any(n.op.name == "iota_like" for n in g.nodes)
    for t in (1, 4, 7):
        q, k, v = _qkv(2, L=t, S=t, Ev=2)
        out = run(g, {"a": q, "b": k, "c": v})["output"]
        np.testing.assert_allclose(out, _sdpa_ref(q, k, v, causal=True)[0], rtol=1e-5,
                                   atol=1e-6)


def test_sdpa_causal_with_more_keys_than_queries_is_top_left_aligned():
    q, k, v = _qkv(1, L=3, S=5)
    g = trace(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), [q, k, v])
    out = run(g, {"a": q, "b": k, "c": v})["output"]
    np.testing.assert_allclose(out, _sdpa_ref(q, k, v, causal=True)[0], rtol=1e-5, atol=1e-6)


def test_fully_masked_rows_give_uniform_weights_instead_of_nan():
    q, k, v = _qkv(1, L=2, S=3)
    keep = np.array([[True, False, True], [False, False, False]])
    g = trace(lambda a, b, c: F.attention(a, b, c, keep=F.where(keep, True, False))[1],
              [q, k, v])
    w = run(g, {"a": q, "b": k, "c": v})["output"]
    np.testing.assert_allclose(w[0, 1], np.full(3, 1 / 3), rtol=1e-6)
    assert w[0, 0, 1] == 0.0


def test_sdpa_dropout_uses_the_trace_key():
    q, k, v = _qkv(1)
    g = trace(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=0.5), [q, k, v])
    assert g.metadata["rng_input"] == "rng_key"
    assert [n.op.name for n in g.nodes].count("dropout") == 1


def _mha_ref(mha, q, k, v, key_padding_mask=None, attn_mask=None, causal=False):
    """Batch-first NumPy multi-head attention with PyTorch's parameter layout."""
    e, h = mha.embed_dim, mha.num_heads
    if mha.in_proj_weight is not None:
        wq, wk, wv = np.split(mha.in_proj_weight.data, 3)
    else:
        wq, wk, wv = (mha.q_proj_weight.data, mha.k_proj_weight.data, mha.v_proj_weight.data)
    bq, bk, bv = np.split(mha.in_proj_bias.data, 3)

    def heads(x):
        n, length, _ = x.shape
        return x.reshape(n, length, h, e // h).transpose(0, 2, 1, 3)

    qh, kh, vh = heads(q @ wq.T + bq), heads(k @ wk.T + bk), heads(v @ wv.T + bv)
    keep = None
    if attn_mask is not None:
        keep = ~attn_mask
    if key_padding_mask is not None:
        kp = ~key_padding_mask[:, None, None, :]
        keep = kp if keep is None else keep & kp
    out, w = _sdpa_ref(qh, kh, vh, keep=keep, causal=causal)
    n, length = q.shape[:2]
    out = out.transpose(0, 2, 1, 3).reshape(n, length, e)
    return out @ mha.out_proj.weight.data.T + mha.out_proj.bias.data, w.mean(1)


def _randomise_biases(mha):
    mha.in_proj_bias.data[...] = rand(*mha.in_proj_bias.shape, seed=8)
    mha.out_proj.bias.data[...] = rand(*mha.out_proj.bias.shape, seed=9)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
def test_mha_self_attention(batch_first):
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    _randomise_biases(mha)
    x = rand(3, 5, 8)
    xin = x if batch_first else x.transpose(1, 0, 2).copy()
    g = trace(lambda t: mha(t, t, t), [InputSpec(("N", 5, 8) if batch_first else (5, "N", 8),
                                                 name="x")])
    out = run(g, {"x": xin})
    ref, ref_w = _mha_ref(mha, x, x, x)
    got = out["output0"] if batch_first else out["output0"].transpose(1, 0, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"], ref_w, rtol=1e-4, atol=1e-5)


def test_mha_parameter_names_and_one_projection_matmul_for_self_attention():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 4, batch_first=True)

        def forward(self, x):
            out, _ = self.attn(x, x, x, need_weights=False)
            return out

    g = trace(Block(), [("N", "T", 8)])
    assert [p.name for p in g.params] == ["attn.in_proj_weight", "attn.in_proj_bias",
                                          "attn.out_proj.weight", "attn.out_proj.bias"]
    matmuls = [n.name for n in g.nodes if n.op.name == "matmul"]
    assert matmuls == ["attn/matmul", "attn/matmul_1", "attn/matmul_2", "attn.out_proj/matmul"]
    assert g.output_names() == ["output"]


def test_mha_cross_attention_with_masks_and_causal():
    mha = nn.MultiheadAttention(6, 3, batch_first=True, kdim=4, vdim=5)
    _randomise_biases(mha)
    q, k, v = rand(2, 4, 6), rand(2, 7, 4), rand(2, 7, 5)
    kpm = np.zeros((2, 7), dtype=bool)
    kpm[0, 5:] = True
    kpm[1, 2] = True
    am = np.zeros((4, 7), dtype=bool)
    am[1, 3] = True
    g = trace(lambda a, b, c, m1, m2: mha(a, b, c, key_padding_mask=m1, attn_mask=m2,
                                          is_causal=True), [q, k, v, kpm, am])
    out = run(g, {"a": q, "b": k, "c": v, "m1": kpm, "m2": am})
    ref, ref_w = _mha_ref(mha, q, k, v, key_padding_mask=kpm, attn_mask=am, causal=True)
    np.testing.assert_allclose(out["output0"], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"], ref_w, rtol=1e-4, atol=1e-5)


def test_mha_float_attn_mask_and_per_head_weights():
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    x = rand(1, 3, 4)
    bias = rand(3, 3)
    g = trace(lambda t: mha(t, attn_mask=bias, average_attn_weights=False)[1], [x])
    w = run(g, {"t": x})["output"]
    assert w.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_mha_dropout_only_in_training():
    mha = nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True)
    g = trace(mha, [(1, 3, 4)])
    assert [n.op.name for n in g.nodes].count("dropout") == 1
    g = trace(mha, [(1, 3, 4)], training=False)
    assert [n.op.name for n in g.nodes].count("dropout") == 0
