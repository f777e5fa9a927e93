"""Samples of the fused ops: linear, fused_conv, attention and fused_elementwise.

The oracle is an independent NumPy formula in float64 (the formulas of
``tests/passes/test_fused_ops.py``): GEMM plus activation, a convolution written as one
``tensordot`` per output pixel, attention with an explicit softmax, and each program written out
by hand. The elementwise programs are chosen to exercise the kernel's buffer reuse: operands that
die at a step, broadcasting that grows the result, a view returned by ``identity`` that must not
be overwritten, and steps that fall back to the plain kernels (casts, integers, ``where``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from lbdl_graph import ops
from tests.op_db import TOL32, TOL64, Arrays, OpSample
from tests.op_db import randn as _randn
from tests.op_db import tol as _tol

__all__ = ["SAMPLES"]

F32 = np.float32
F64 = np.float64
Shape = tuple[int, ...]




def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + special.erf(x / math.sqrt(2)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ACTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda y: y, "relu": lambda y: np.maximum(y, 0), "gelu": _gelu,
    "gelu_tanh": _gelu_tanh}

# ---------------------------------------------------------------------------------------- linear


def _linear_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
                activation: str) -> np.ndarray:
    y = x.astype(F64) @ w.astype(F64)
    return ACTS[activation](y + b if b is not None else y)


def _linear(label: str, x: Shape, w: Shape, b: Shape | None, activation: str = "none",
            dt: type = F32) -> OpSample:
    return OpSample(ops.linear, _randn(x, w, b, dt=dt), {"activation": activation}, label=label,
                    reference=_linear_ref, **_tol(dt))


LINEAR = [
    _linear("2d", (5, 4), (4, 3), (3,)),
    _linear("3d_relu", (2, 3, 4), (4, 5), (5,), "relu"),
    _linear("gelu", (2, 3, 8), (8, 6), (6,), "gelu"),
    _linear("gelu_tanh_2d", (6, 8), (8, 16), (16,), "gelu_tanh"),
    _linear("no_bias", (2, 3, 4), (4, 5), None),
    _linear("no_bias_gelu_tanh", (3, 4), (4, 2), None, "gelu_tanh"),
    _linear("1d_input", (4,), (4, 3), (3,), "relu"),
    _linear("scalar_bias", (2, 4), (4, 3), ()),
    _linear("bias_of_one", (2, 2, 4), (4, 3), (1,), "gelu"),
    _linear("4d", (2, 2, 3, 4), (4, 5), (5,)),
    _linear("f64_gelu", (2, 3, 4), (4, 5), (5,), "gelu", F64),
]

# ------------------------------------------------------------------------------------ fused_conv


def _conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *,
              strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
              dilations: tuple[int, ...] | None, group: int) -> np.ndarray:
    """Convolution as its definition: one tensordot over each window of the padded input."""
    k = x.ndim - 2
    s, d = strides or (1,) * k, dilations or (1,) * k
    p = pads or (0,) * (2 * k)
    xp = np.pad(x.astype(F64), [(0, 0), (0, 0), *((p[i], p[i + k]) for i in range(k))])
    kernel = w.shape[2:]
    out = [(xp.shape[2 + i] - d[i] * (kernel[i] - 1) - 1) // s[i] + 1 for i in range(k)]
    m, cg = w.shape[:2]
    mg = m // group
    y = np.zeros((x.shape[0], m, *out))
    for o in itertools.product(*map(range, out)):
        win = tuple(slice(o[i] * s[i], o[i] * s[i] + d[i] * (kernel[i] - 1) + 1, d[i])
                    for i in range(k))
        for g in range(group):
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg), *win)]
            axes = list(range(1, k + 2))
            y[(slice(None), slice(g * mg, (g + 1) * mg), *o)] = np.tensordot(
                patch, w[g * mg:(g + 1) * mg].astype(F64), axes=(axes, axes))
    if b is not None:
        y += b.reshape(-1, *(1,) * k)
    return y


def _fused_conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                    residual: np.ndarray | None = None, *, activation: str,
                    **conv: Any) -> np.ndarray:
    y = _conv_ref(x, w, b, **conv)
    return ACTS[activation](y + residual if residual is not None else y)


def _fused_conv(label: str, x: Shape, w: Shape, bias: bool, residual: Shape | None,
                activation: str = "none", dt: type = F32, **attrs: Any) -> OpSample:
    b = (w[0],) if bias else None
    return OpSample(ops.fused_conv, _randn(x, w, b, residual, dt=dt),
                    {"activation": activation, **attrs}, label=label,
                    reference=_fused_conv_ref, **_tol(dt))


FUSED_CONV = [
    _fused_conv("residual_relu", (2, 3, 5, 5), (4, 3, 3, 3), True, (2, 4, 5, 5), "relu",
                pads=(1, 1, 1, 1)),
    _fused_conv("relu", (2, 1, 8, 8), (6, 1, 5, 5), True, None, "relu"),
    _fused_conv("residual_no_bias", (1, 4, 6, 6), (4, 4, 3, 3), False, (1, 4, 6, 6),
                pads=(1, 1, 1, 1)),
    _fused_conv("broadcast_residual", (2, 3, 6, 5), (4, 3, 1, 1), True, (4, 1, 1), "relu"),
    _fused_conv("strided_groups", (2, 4, 7, 7), (6, 2, 3, 3), True, (2, 6, 4, 4), "relu",
                strides=(2, 2), pads=(1, 1, 1, 1), group=2),
    _fused_conv("1d_dilated", (2, 3, 11), (4, 3, 3), False, (2, 4, 7), "relu", dilations=(2,)),
    _fused_conv("depthwise_same", (2, 4, 6, 5), (8, 1, 3, 3), True, (2, 8, 6, 5), "relu",
                pads=(1, 1, 1, 1), group=4),
    _fused_conv("3d_dilated_asym_pads", (1, 2, 5, 6, 4), (3, 2, 2, 3, 2), True, None, "relu",
                pads=(1, 0, 1, 0, 2, 1), dilations=(1, 2, 2)),
    _fused_conv("plain", (1, 2, 5, 4), (3, 2, 2, 2), True, None),
    _fused_conv("f64_residual_relu", (2, 2, 5, 5), (3, 2, 3, 3), True, (2, 3, 3, 3), "relu",
                F64),
]

# ------------------------------------------------------------------------------------- attention


def _attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                   *, scale: float | None, causal: bool) -> np.ndarray:
    c = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q.astype(F64) @ np.swapaxes(k, -1, -2) * c
    if mask is not None:
        s = s + mask
    if causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], bool), 1), -np.inf, s)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def _attention(label: str, q: Shape, k: Shape, v: Shape, mask: Shape | None = None,
               scale: float | None = None, causal: bool = False, dt: type = F32) -> OpSample:
    return OpSample(ops.attention, _randn(q, k, v, mask, dt=dt),
                    {"scale": scale, "causal": causal}, label=label, reference=_attention_ref,
                    **_tol(dt))


def _scaled(q: Shape, factor: float, tiny_row: bool = False
            ) -> Callable[[np.random.Generator], Arrays]:
    """q, k, v with q scaled by ``factor``; with ``tiny_row`` a mask pushing every score of
    query row 1 near -120 (exp underflows to a sum below 1e-20)."""

    def make(rng: np.random.Generator) -> Arrays:
        q_, k_, v_ = (rng.standard_normal(q).astype(F32) for _ in range(3))
        mask = np.zeros((q[-2], q[-2]), F32) if tiny_row else None
        if mask is not None:
            mask[1] = -120.0
        return [q_ * F32(factor), k_, v_, mask]

    return make


ATTENTION = [
    _attention("4d", (2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8)),
    _attention("mask_scale", (2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 6), (4, 4), scale=0.5),
    _attention("causal", (2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8), scale=0.3, causal=True),
    _attention("mask_causal", (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 1, 5, 5),
               causal=True),
    _attention("cross_causal", (2, 2, 3, 4), (2, 2, 6, 4), (2, 2, 6, 5), causal=True),
    _attention("padding_mask", (2, 2, 4, 4), (2, 2, 6, 4), (2, 2, 6, 4), (2, 1, 1, 6)),
    _attention("3d", (3, 5, 8), (3, 5, 8), (3, 5, 8), (5, 5)),
    _attention("2d_causal", (4, 8), (4, 8), (4, 2), causal=True),
    _attention("broadcast_batch", (2, 3, 4, 8), (1, 3, 6, 8), (1, 3, 6, 8)),
    # scores beyond exp's range, and a row whose weights all underflow: the shifted softmax
    OpSample(ops.attention, _scaled((2, 2, 4, 8), 40.0), {"scale": None, "causal": True},
             label="large_scores", reference=_attention_ref, **TOL32),
    OpSample(ops.attention, _scaled((2, 2, 4, 8), 1.0, tiny_row=True),
             {"scale": None, "causal": False}, label="underflowing_row",
             reference=_attention_ref, **TOL32),
    OpSample(ops.attention, _randn((2, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8), (4, 4), dt=np.float16),
             {"scale": None, "causal": True}, label="f16_mask_causal", reference=_attention_ref,
             rtol=2e-2, atol=2e-2),
    _attention("f64_mask_causal", (2, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8), (4, 4), 0.25, True,
               F64),
]

# ----------------------------------------------------------------------------- fused_elementwise


def _const(value: float, dt: type = F32) -> tuple[str, tuple[int, ...], Any]:
    return ("constant", (), (("value", np.asarray(value, dt)),))


def _fe(label: str, make: Callable[[np.random.Generator], Arrays], program: tuple[Any, ...],
        reference: Callable[..., Any], grad: bool = True, **tol: float) -> OpSample:
    def ref(*xs: np.ndarray, program: Any) -> np.ndarray:
        return reference(*xs)

    return OpSample(ops.fused_elementwise, make, {"program": program}, label=label,
                    reference=ref, grad=grad, **(tol or TOL32))


def _ints(rng: np.random.Generator) -> Arrays:
    return [rng.integers(-5, 6, (3, 4)).astype(np.int64), rng.integers(-5, 6, (4,))]


def _chain_ref(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    u = x.astype(F64) * y + z
    sig = 1 / (1 + np.exp(-u))
    g = _gelu_tanh(sig * u)
    return np.maximum(g * g - 0.25, 0) / (np.abs(z) + 1)


FUSED_ELEMENTWISE = [
    _fe("mul_add_leaky_cast", _randn((2, 3), (3,)),
        (("mul", (0, 1), ()), _const(0.5), ("add", (2, 3), ()),
         ("leaky_relu", (4,), (("alpha", 0.2),)), ("cast", (5,), (("to", "f64"),))),
        lambda x, y: np.where(x * y + 0.5 >= 0, 1.0, 0.2) * (x.astype(F64) * y + 0.5),
        grad=False),
    # registers die at the step that reads them last: their buffers are reused
    _fe("chain_reuse", _randn((3, 4), (4,), (3, 4)),
        (("mul", (0, 1), ()), ("add", (3, 2), ()), ("sigmoid", (4,), ()),
         ("mul", (5, 4), ()), ("gelu", (6,), (("approximate", "tanh"),)), ("mul", (7, 7), ()),
         _const(0.25), ("sub", (8, 9), ()), ("relu", (10,), ()), ("abs", (2,), ()),
         _const(1.0), ("add", (12, 13), ()), ("div", (11, 14), ())),
        _chain_ref, grad=False),
    # (3, 1) op (1, 4) grows to (3, 4): no operand buffer fits the result
    _fe("broadcast_growth", _randn((3, 1), (1, 4)),
        (("sub", (0, 1), ()), ("exp", (2,), ()), ("tanh", (0,), ()), ("add", (3, 4), ()),
         ("gelu", (5,), (("approximate", "none"),))),
        lambda a, b: _gelu(np.exp(a.astype(F64) - b) + np.tanh(a))),
    # identity returns its operand: the buffer it shares must survive its other reader
    _fe("identity_alias", _randn((2, 5)),
        (("exp", (0,), ()), ("identity", (1,), ()), ("neg", (1,), ()), ("sub", (2, 3), ())),
        lambda x: 2 * np.exp(x.astype(F64))),
    _fe("compare_where", _randn((3, 4), (3, 4)),
        (("greater", (0, 1), ()), ("logical_not", (2,), ()), ("maximum", (0, 1), ()),
         ("minimum", (0, 1), ()), ("where", (3, 5, 4), ()), ("sqrt", (6,), ()),
         ("isnan", (7,), ())),
        lambda x, y: np.isnan(np.sqrt(np.where(x <= y, np.minimum(x, y), np.maximum(x, y)))),
        grad=False),
    _fe("f64_math", _randn((2, 3), (2, 3), dt=F64),
        (("erf", (0,), ()), ("mul", (1, 1), ()), _const(1.0, F64), ("add", (3, 4), ()),
         ("pow", (5, 2), ()), ("div", (2, 6), ()), ("log", (5,), ()), ("minimum", (7, 8), ()),
         ("softplus", (9,), ()), ("reciprocal", (10,), ())),
        lambda x, y: 1 / np.logaddexp(0, np.minimum(special.erf(x) / (y * y + 1) ** special.erf(x),
                                                    np.log(y * y + 1))),
        **TOL64),
    # a larger program mixing fast steps with plain kernels (greater's bool, where, a last cast)
    _fe("large_mixed", _randn((300, 257), (257,), (300, 1)),
        (("mul", (0, 1), ()), ("add", (3, 2), ()), ("tanh", (4,), ()),
         ("gelu", (5,), (("approximate", "tanh"),)), _const(0.0), ("greater", (0, 7), ()),
         ("where", (8, 6, 0), ()), ("sigmoid", (9,), ()), ("cast", (10,), (("to", "f64"),))),
        lambda x, y, z: 1 / (1 + np.exp(-np.where(x > 0, _gelu_tanh(np.tanh(x * y + z)), x))),
        grad=False),
    # an operand the result does not depend on, bigger than the result
    _fe("unused_big_operand", _randn((400,), (200, 400)), (("exp", (0,), ()),),
        lambda x, y: np.exp(x.astype(F64)), grad=False),
    _fe("int64", _ints,
        (("mul", (0, 1), ()), ("add", (2, 0), ()), ("neg", (3,), ()), ("abs", (4,), ())),
        lambda a, b: np.abs(-(a * b + a)), grad=False),
]

SAMPLES: list[OpSample] = [*LINEAR, *FUSED_CONV, *ATTENTION, *FUSED_ELEMENTWISE]
