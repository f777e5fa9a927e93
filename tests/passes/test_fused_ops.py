"""The fused ops: shape rules and decompositions (run by the NumPy interpreter) against
independent NumPy formulas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import special

from lbdl_graph import GraphBuilder, LbdlError, ops
from lbdl_graph.backends.numpy import run

RNG = np.random.default_rng(0)
F32 = np.float32


def _run(op: Any, arrays: list[np.ndarray | None], **attrs: Any) -> np.ndarray:
    b = GraphBuilder("one")
    ins = [b.input(f"in{i}", a.dtype, a.shape) if a is not None else None
           for i, a in enumerate(arrays)]
    with b:
        out = op(*ins, **attrs)
    feeds = {f"in{i}": a for i, a in enumerate(arrays) if a is not None}
    return run(b.build([out]), feeds)[out.name]


def _randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + special.erf(x / math.sqrt(2)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ACTS = {"none": lambda y: y, "relu": lambda y: np.maximum(y, 0), "gelu": _gelu,
        "gelu_tanh": _gelu_tanh}


@pytest.mark.parametrize("activation", ACTS)
def test_linear(activation: str) -> None:
    x, w, b = _randn(2, 3, 4), _randn(4, 5), _randn(5)
    got = _run(ops.linear, [x, w, b], activation=activation)
    np.testing.assert_allclose(got, ACTS[activation](x @ w + b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_run(ops.linear, [x, w]), x @ w, rtol=1e-5, atol=1e-6)


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, wd = xp.shape
    m, _, kh, kw = w.shape
    out = np.zeros((n, m, h - kh + 1, wd - kw + 1), dtype=np.float64)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = np.einsum("nchw,mchw->nm", xp[:, :, i:i + kh, j:j + kw], w)
    return out + b[None, :, None, None]


def test_fused_conv() -> None:
    x, w, b, r = _randn(2, 3, 5, 5), _randn(4, 3, 3, 3), _randn(4), _randn(2, 4, 5, 5)
    got = _run(ops.fused_conv, [x, w, b, r], pads=(1, 1, 1, 1), activation="relu")
    want = np.maximum(_conv2d(x, w, b, 1) + r, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
               scale: float, causal: bool) -> np.ndarray:
    s = q.astype(np.float64) @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = s + mask
    if causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], bool), 1), -np.inf, s)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize(("masked", "scale", "causal"),
                         [(False, None, False), (True, 0.5, False), (False, 0.3, True),
                          (True, None, True)])
def test_attention(masked: bool, scale: float | None, causal: bool) -> None:
    q, k, v = _randn(2, 3, 4, 8), _randn(2, 3, 4, 8), _randn(2, 3, 4, 6)
    mask = _randn(4, 4) if masked else None
    got = _run(ops.attention, [q, k, v, mask], scale=scale, causal=causal)
    want = _attention(q, k, v, mask, 1 / math.sqrt(8) if scale is None else scale, causal)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fused_elementwise() -> None:
    x, y = _randn(2, 3), _randn(3)
    program = (("mul", (0, 1), ()),
               ("constant", (), (("value", np.asarray(0.5, np.float32)),)),
               ("add", (2, 3), ()),
               ("leaky_relu", (4,), (("alpha", 0.2),)),
               ("cast", (5,), (("to", "f64"),)))
    got = _run(ops.fused_elementwise, [x, y], program=program)
    z = x * y + 0.5
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.where(z >= 0, z, 0.2 * z), rtol=1e-6)


BAD = [
    (ops.linear, [(2, 4), (4, 5, 1)], {}, "must be 2-D"),
    (ops.linear, [(2, 4), (4, 5), (2, 5)], {}, "scalar or 1-D"),
    (ops.linear, [(2, 4), (4, 5), (3,)], {}, "does not broadcast"),
    (ops.linear, [(2, 4), (4, 5)], {"activation": "tanh"}, "unknown activation"),
    (ops.fused_conv, [(1, 3, 5, 5), (4, 3, 3, 3), None, (1, 4, 5, 5)], {}, "does not broadcast"),
    (ops.attention, [(2, 4, 8), (2, 4, 8), (2, 4, 8), (5, 4)], {}, "does not broadcast"),
    (ops.fused_elementwise, [(2,)], {"program": ()}, "non-empty"),
    (ops.fused_elementwise, [(2,)], {"program": (("matmul", (0, 0), ()),)}, "not an elementwise"),
    (ops.fused_elementwise, [(2,)], {"program": (("exp", (1,), ()),)}, "missing register"),
]


@pytest.mark.parametrize(("op", "shapes", "attrs", "match"), BAD, ids=[b[3] for b in BAD])
def test_fused_shape_rules_reject(op: Any, shapes: list[Any], attrs: dict[str, Any],
                                  match: str) -> None:
    b = GraphBuilder("bad")
    ins = [b.input(f"in{i}", "f32", s) if s is not None else None for i, s in enumerate(shapes)]
    with b, pytest.raises(LbdlError, match=match):
        op(*ins, **attrs)


def _fused_samples() -> list[Any]:
    from tests.samples.fused import SAMPLES

    return SAMPLES


@pytest.mark.parametrize("s", _fused_samples(), ids=lambda s: s.id)
def test_fused_kernels_own_their_results(s: Any) -> None:
    """The NumPy kernels reuse scratch and spare buffers across calls: a result must survive
    the next call, and the inputs are never written."""
    from lbdl_graph.backends.numpy import KERNELS

    attrs = s.op.check_attrs(s.attrs)
    first = s.make(np.random.default_rng(1))
    saved = [a.copy() if a is not None else None for a in first]
    out = KERNELS[s.op](*first, **attrs)
    kept = out.copy()
    for seed in (2, 3):
        KERNELS[s.op](*s.make(np.random.default_rng(seed)), **attrs)
    np.testing.assert_array_equal(out, kept)
    for a, b in zip(first, saved, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_linear_and_attention_take_strided_operands() -> None:
    x, w = _randn(6, 5).T, _randn(3, 6).T  # (5, 6) and (6, 3), neither C-contiguous
    np.testing.assert_allclose(_run(ops.linear, [x, w], activation="gelu"),
                               ACTS["gelu"](x @ w), rtol=1e-5, atol=1e-6)
    q, k, v = (np.swapaxes(_randn(2, 8, 5), 1, 2) for _ in range(3))
    want = _attention(q, k, v, None, 0.7, True)
    np.testing.assert_allclose(_run(ops.attention, [q, k, v], scale=0.7, causal=True), want,
                               rtol=1e-4, atol=1e-5)


def test_omitted_optional_inputs_reach_the_kernels() -> None:
    """A node built without its trailing optional input has fewer slots: the conv, transposed
    conv and layer norm kernels default the bias to None (the fusions build such nodes)."""
    x, w, g = _randn(1, 2, 5, 5), _randn(3, 2, 3, 3), np.ones(5, F32)
    np.testing.assert_allclose(_run(ops.conv, [x, w]), _conv2d(x, w, np.zeros(3, F32), 0),
                               rtol=1e-4, atol=1e-5)
    assert _run(ops.conv_transpose, [x, _randn(2, 3, 3, 3)]).shape == (1, 3, 7, 7)
    y = _run(ops.layer_norm, [x, g])
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
