"""Fused ops produced by the fusion passes: linear, fused_conv, attention, fused_elementwise.

Each one has a schema, a shape rule and a ``decompose=`` written with primitive ops, so a backend
or the autodiff driver without a dedicated rule for it keeps working through the decomposition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import OpError, ShapeError
from ..opdef import OPS, Attr, Trait, defop
from ..shapes import broadcast_shapes, fmt_shape
from ..types import TensorType
from ._rules import require, same_dtype
from .nn import _CONV, _conv_rule, _matmul_rule

__all__ = ["LINEAR_ACTIVATIONS", "attention", "fused_conv", "fused_elementwise", "linear"]

D, E = Trait.DIFFERENTIABLE, Trait.ELEMENTWISE
LINEAR_ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh")
CONV_ACTIVATIONS = ("none", "relu")


def _check_activation(op: str, activation: str, allowed: tuple[str, ...]) -> None:
    if activation not in allowed:
        raise OpError(f"{op}: unknown activation {activation!r}; use one of {allowed}")


def _fits(small: TensorType, big: TensorType, what: str) -> None:
    """``small`` broadcasts to ``big``'s shape without growing it (unidirectional)."""
    try:
        ok = broadcast_shapes(small.shape, big.shape) == tuple(big.shape)
    except ShapeError:
        ok = False
    if not ok or small.ndim > big.ndim:
        raise ShapeError(f"{what} {small} does not broadcast to {fmt_shape(big.shape)}")


def _activate(y: Any, activation: str) -> Any:
    from . import gelu, relu

    if activation == "relu":
        return relu(y)
    if activation in ("gelu", "gelu_tanh"):
        return gelu(y, approximate="tanh" if activation == "gelu_tanh" else "none")
    return y


# ---------------------------------------------------------------------------------------- linear


def _linear_rule(x: TensorType, w: TensorType, b: TensorType | None, *,
                 activation: str) -> TensorType:
    same_dtype(x, w, b)
    require(x, "input", kinds=("float",))
    _check_activation("linear", activation, LINEAR_ACTIVATIONS)
    if w.ndim != 2:
        raise ShapeError(f"linear: weight {w} must be 2-D (in, out)")
    out = _matmul_rule(x, w)
    if b is not None:
        if b.ndim > 1:
            raise ShapeError(f"linear: bias {b} must be a scalar or 1-D")
        _fits(b, out, "linear: bias")
    return out


def _linear_decompose(x: Any, w: Any, b: Any = None, *, activation: str) -> Any:
    from . import add, matmul

    y = matmul(x, w)
    return _activate(add(y, b) if b is not None else y, activation)


linear = defop(
    "linear", ("x", "w", "b?"), infer=_linear_rule,
    attrs=(Attr("activation", "str", "none"),), traits=(D,), decompose=_linear_decompose,
    doc="activation(x @ w + b) with w of shape (in, out): ONNX Gemm with transB=0, alpha=beta=1,"
        " except that x may have batch dims ([..., in]) and b ([out], [1] or scalar) is added "
        "to every row; activation is none, relu, gelu (erf) or gelu_tanh")

# ------------------------------------------------------------------------------------ fused_conv


def _fused_conv_rule(x: TensorType, w: TensorType, b: TensorType | None,
                     residual: TensorType | None, *, activation: str,
                     **conv_attrs: Any) -> TensorType:
    out = _conv_rule(x, w, b, **conv_attrs)
    _check_activation("fused_conv", activation, CONV_ACTIVATIONS)
    if residual is not None:
        same_dtype(out, residual)
        _fits(residual, out, "fused_conv: residual")
    return out


def _fused_conv_decompose(x: Any, w: Any, b: Any = None, residual: Any = None, *,
                          activation: str, **conv_attrs: Any) -> Any:
    from . import add, conv

    y = conv(x, w, b, **conv_attrs)
    return _activate(add(y, residual) if residual is not None else y, activation)


fused_conv = defop(
    "fused_conv", ("x", "w", "b?", "residual?"), infer=_fused_conv_rule,
    attrs=(*_CONV, Attr("activation", "str", "none")), traits=(D,),
    decompose=_fused_conv_decompose,
    doc="activation(conv(x, w, b) + residual): a convolution with its residual add and relu")

# ------------------------------------------------------------------------------------- attention


def _attention_rule(q: TensorType, k: TensorType, v: TensorType, mask: TensorType | None, *,
                    scale: float | None, causal: bool) -> TensorType:
    same_dtype(q, k, v, mask)
    require(q, "query", kinds=("float",))
    if min(q.ndim, k.ndim, v.ndim) < 2:
        raise ShapeError(f"attention: q {q}, k {k} and v {v} need rank >= 2")
    if scale is None and not isinstance(q.shape[-1], int):
        raise ShapeError(f"attention: scale=None needs a static head size, got q {q}")
    kt = k.with_shape((*k.shape[:-2], k.shape[-1], k.shape[-2]))
    scores = _matmul_rule(q, kt)
    if mask is not None:
        _fits(mask, scores, "attention: mask")
    return _matmul_rule(scores, v)


def _attention_decompose(q: Any, k: Any, v: Any, mask: Any = None, *, scale: float | None,
                         causal: bool) -> Any:
    from . import add, constant, greater, iota_like, matmul, mul, softmax, transpose, where

    dt = q.type.dtype.numpy
    perm = (*range(k.ndim - 2), k.ndim - 1, k.ndim - 2)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = mul(matmul(q, transpose(k, perm=perm)), constant(value=np.asarray(s, dtype=dt)))
    if mask is not None:
        scores = add(scores, mask)
    if causal:  # query i sees keys j <= i (top-left aligned, as torch's is_causal)
        above = greater(iota_like(scores, axis=-1), iota_like(scores, axis=-2))
        scores = where(above, constant(value=np.asarray(-np.inf, dtype=dt)), scores)
    return matmul(softmax(scores, axis=-1), v)


attention = defop(
    "attention", ("q", "k", "v", "mask?"), infer=_attention_rule,
    attrs=(Attr("scale", "float", None, True), Attr("causal", "bool", False)), traits=(D,),
    decompose=_attention_decompose,
    doc="softmax(q @ k^T * scale + mask) @ v with q [..., Lq, D], k [..., Lk, D], "
        "v [..., Lk, Dv]; scale=None means 1/sqrt(D); causal hides keys j > i")

# ----------------------------------------------------------------------------- fused_elementwise

Step = tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]]


def _steps(program: Any) -> tuple[Step, ...]:
    """Validate the shape of a program: a non-empty tuple of (op, arg indices, attrs) steps."""
    if not isinstance(program, tuple) or not program:
        raise OpError("fused_elementwise: program must be a non-empty tuple of steps")
    for step in program:
        ok = isinstance(step, tuple) and len(step) == 3 and isinstance(step[0], str)
        if not ok or not isinstance(step[1], tuple) or not isinstance(step[2], tuple):
            raise OpError(f"fused_elementwise: bad step {step!r}; expected (op, (args...), "
                          "((attr, value), ...))")
    return program


def _step_op(name: str) -> Any:
    op = OPS.get(name)
    if op is None or not (op.has(E) or name == "constant"):
        raise OpError(f"fused_elementwise: {name!r} is not an elementwise op")
    return op


def _fused_elementwise_rule(*xs: TensorType, program: Any) -> TensorType:
    regs: list[TensorType] = list(xs)
    for name, args, attrs in _steps(program):
        op = _step_op(name)
        if any(not 0 <= i < len(regs) for i in args):
            raise OpError(f"fused_elementwise: step {name}{args} refers to a missing register "
                          f"(have {len(regs)})")
        checked: Mapping[str, Any] = op.check_attrs(dict(attrs))
        op.check_arity(len(args))
        regs.append(op.infer_types([regs[i] for i in args], checked)[0])
    return regs[-1]


def _fused_elementwise_decompose(*xs: Any, program: Any) -> Any:
    regs: list[Any] = list(xs)
    for name, args, attrs in _steps(program):
        regs.append(_step_op(name)(*(regs[i] for i in args), **dict(attrs)))
    return regs[-1]


fused_elementwise = defop(
    "fused_elementwise", ("*xs",), infer=_fused_elementwise_rule,
    attrs=(Attr("program", "any"),), traits=(E, D), decompose=_fused_elementwise_decompose,
    doc="a chain of elementwise ops run as one node; program is a tuple of steps "
        "(op name, arg registers, ((attr, value), ...)); registers 0..n-1 are the inputs, each "
        "step appends one, the last is the result")
