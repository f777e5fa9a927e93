"""ONNX elementwise ops: unary math, activations, arithmetic, comparisons, logic, casts."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .context import NodeCtx, handles
from .loader import onnx_dtype

# ---- one-to-one unary and binary ops ----
_UNARY = {
    "Abs": ops.abs_, "Neg": ops.neg, "Exp": ops.exp, "Log": ops.log, "Sqrt": ops.sqrt,
    "Reciprocal": ops.reciprocal, "Sin": ops.sin, "Cos": ops.cos, "Tanh": ops.tanh,
    "Sigmoid": ops.sigmoid, "Erf": ops.erf, "Softplus": ops.softplus, "Floor": ops.floor,
    "Ceil": ops.ceil, "Round": ops.round_, "Not": ops.logical_not, "IsNaN": ops.isnan,
    "Identity": ops.identity,
}
_BINARY = {
    "Add": ops.add, "Sub": ops.sub, "Mul": ops.mul, "Div": ops.div, "Equal": ops.equal,
    "Less": ops.less, "LessOrEqual": ops.less_equal, "Greater": ops.greater,
    "GreaterOrEqual": ops.greater_equal, "And": ops.logical_and, "Or": ops.logical_or,
    "BitwiseAnd": ops.bitwise_and, "BitwiseOr": ops.bitwise_or, "BitwiseXor": ops.bitwise_xor,
}


@handles(*_UNARY)
def _unary(n: NodeCtx) -> Value:
    x = n.x(0)
    if n.op_type == "Abs" and x.dtype.kind in ("uint", "bool"):
        return n.emit(ops.identity, x, out=0)
    return n.emit(_UNARY[n.op_type], x, out=0)


@handles(*_BINARY)
def _binary(n: NodeCtx) -> Value:
    return n.emit(_BINARY[n.op_type], n.x(0), n.x(1), out=0)


@handles("Relu")
def _relu(n: NodeCtx) -> Value:
    x = n.x(0)
    if x.dtype.is_float:
        return n.emit(ops.relu, x, out=0)
    return n.emit(ops.maximum, x, n.scalar(0, x), out=0)


@handles("Sign")
def _sign(n: NodeCtx) -> Value:
    x = n.x(0)
    if x.dtype.kind == "uint":
        return n.emit(ops.cast, n.emit(ops.greater, x, n.scalar(0, x)), to=x.dtype, out=0)
    return n.emit(ops.sign, x, out=0)


@handles("LeakyRelu")
def _leaky_relu(n: NodeCtx) -> Value:
    return n.emit(ops.leaky_relu, n.x(0), alpha=n.attr("alpha", 0.01), out=0)


@handles("Gelu")
def _gelu(n: NodeCtx) -> Value:
    return n.emit(ops.gelu, n.x(0), approximate=n.attr("approximate", "none"), out=0)


@handles("Clip")
def _clip(n: NodeCtx) -> Value:
    x = n.x(0)
    lo_v, hi_v = n.opt(1), n.opt(2)
    lo = n.attr("min") if "min" in n.attrs else None
    hi = n.attr("max") if "max" in n.attrs else None
    dynamic = False
    for i in (1, 2):
        if n.has(i):
            arr = n.imp.constant_value(n.proto.input[i])
            if arr is None:
                dynamic = True
            elif i == 1:
                lo = float(np.asarray(arr).astype(np.float64))
            else:
                hi = float(np.asarray(arr).astype(np.float64))
    if not dynamic:
        return n.emit(ops.clip, x, min=lo, max=hi, out=0)
    y = x
    if lo_v is not None:
        y = n.emit(ops.maximum, y, lo_v)
    if hi_v is not None:
        y = n.emit(ops.minimum, y, hi_v)
    return y


FLOAT8_MAX = {"float8_e4m3fn": float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)}


def _cast_to(n: NodeCtx, x: Value, to: Any) -> Value:
    if to.name in FLOAT8_MAX and n.attr("saturate", 1) and x.dtype.is_float:
        m = FLOAT8_MAX[to.name]
        x = n.emit(ops.clip, x, min=-m, max=m)
    return n.emit(ops.cast, x, to=to, out=0)


@handles("Cast")
def _cast(n: NodeCtx) -> Value:
    return _cast_to(n, n.x(0), onnx_dtype(n.attr("to"), f"Cast node '{n.name}' target"))


@handles("CastLike")
def _cast_like(n: NodeCtx) -> Value:
    return _cast_to(n, n.x(0), n.x(1).dtype)


@handles("Where")
def _where(n: NodeCtx) -> Value:
    return n.emit(ops.where, n.x(0), n.x(1), n.x(2), out=0)


@handles("Xor")
def _xor(n: NodeCtx) -> Value:
    return n.emit(ops.logical_not, n.emit(ops.equal, n.x(0), n.x(1)), out=0)


@handles("BitwiseNot")
def _bitwise_not(n: NodeCtx) -> Value:
    x = n.x(0)
    ones = -1 if x.dtype.kind == "int" else (1 << x.dtype.bits) - 1
    return n.emit(ops.bitwise_xor, x, n.scalar(ones, x), out=0)


@handles("BitShift")
def _bit_shift(n: NodeCtx) -> Value:
    """Shifts as int64 arithmetic: x * 2**s or floor(x / 2**s); out-of-range shifts give 0
    (or -1 for a right shift of a negative x), as ONNX specifies."""
    x, s = n.x(0), n.x(1)
    i64 = "int64"
    valid = n.emit(ops.logical_and, n.emit(ops.greater_equal, s, n.scalar(0, s)),
                   n.emit(ops.less, s, n.scalar(x.dtype.bits, s)))
    s64 = n.emit(ops.cast, n.emit(ops.where, valid, s, n.scalar(0, s)), to=i64)
    x64 = n.emit(ops.cast, x, to=i64)
    factor = n.emit(ops.pow_, n.constant(2, i64), s64)
    zero = n.scalar(0, x)
    if n.attr("direction") == "LEFT":
        y = n.emit(ops.cast, n.emit(ops.mul, x64, factor), to=x.dtype)
        return n.emit(ops.where, valid, y, zero, out=0)
    q = n.emit(ops.div, x64, factor)  # truncates; floor it for negative x
    inexact = n.emit(ops.logical_not, n.emit(ops.equal, n.emit(ops.mul, q, factor), x64))
    negative = n.emit(ops.less, x64, n.constant(0, i64))
    q = n.emit(ops.sub, q, n.emit(ops.cast, n.emit(ops.logical_and, inexact, negative), to=i64))
    y = n.emit(ops.cast, q, to=x.dtype)
    if x.dtype.kind == "uint":
        return n.emit(ops.where, valid, y, zero, out=0)
    fill = n.emit(ops.where, n.emit(ops.less, x, zero), n.scalar(-1, x), zero)
    return n.emit(ops.where, valid, y, fill, out=0)


@handles("Pow")
def _pow(n: NodeCtx) -> Value:
    a, b = n.x(0), n.x(1)
    if b.dtype != a.dtype:
        b = n.emit(ops.cast, b, to=a.dtype)
    return n.emit(ops.pow_, a, b, out=0)


@handles("Mod")
def _mod(n: NodeCtx) -> Value:
    a, b = n.x(0), n.x(1)
    dt = a.dtype
    if dt.is_float and dt.bits < 32:  # keep the remainder exact: compute in float32
        a, b = n.emit(ops.cast, a, to="float32"), n.emit(ops.cast, b, to="float32")
    zero = n.scalar(0, a)
    if a.dtype.is_float:
        # C fmod: a - trunc(a / b) * b with trunc(q) = sign(q) * floor(|q|); a when |b| = inf
        q = n.emit(ops.div, a, b)
        t = n.emit(ops.mul, n.emit(ops.sign, q), n.emit(ops.floor, n.emit(ops.abs_, q)))
        tb = n.emit(ops.where, n.emit(ops.equal, t, zero), zero, n.emit(ops.mul, t, b))
        r = n.emit(ops.sub, a, tb)
    else:
        r = n.emit(ops.sub, a, n.emit(ops.mul, n.emit(ops.div, a, b), b))  # truncated
    if not n.attr("fmod", 0) and a.dtype.kind != "uint":
        # Python mod: the result takes the sign of the divisor
        fix = n.emit(ops.logical_and, n.emit(ops.logical_not, n.emit(ops.equal, r, zero)),
                     n.emit(ops.logical_not, n.emit(ops.equal, n.emit(ops.less, r, zero),
                                                    n.emit(ops.less, b, zero))))
        r = n.emit(ops.where, fix, n.emit(ops.add, r, b), r)
    if r.dtype != dt:
        return n.emit(ops.cast, r, to=dt, out=0)
    return n.emit(ops.identity, r, out=0)


@handles("Sum", "Max", "Min", "Mean")
def _variadic(n: NodeCtx) -> Value:
    xs = n.inputs()
    op = {"Sum": ops.add, "Mean": ops.add, "Max": ops.maximum, "Min": ops.minimum}[n.op_type]
    y = xs[0]
    for i, v in enumerate(xs[1:]):
        last = i == len(xs) - 2 and n.op_type != "Mean"
        y = n.emit(op, y, v, out=0 if last else None)
    if n.op_type == "Mean" and len(xs) > 1:
        y = n.emit(ops.div, y, n.scalar(len(xs), y), out=0)
    return y


# ---- activations written with other ops ----
@handles("PRelu")
def _prelu(n: NodeCtx) -> Value:
    x, slope = n.x(0), n.x(1)
    neg = n.emit(ops.less, x, n.scalar(0, x))
    return n.emit(ops.where, neg, n.emit(ops.mul, x, slope), x, out=0)


def _expm1_scaled(n: NodeCtx, x: Value, alpha: float) -> Value:
    return n.emit(ops.mul, n.scalar(alpha, x), n.emit(ops.sub, n.emit(ops.exp, x),
                                                      n.scalar(1, x)))


@handles("Elu")
def _elu(n: NodeCtx) -> Value:
    x = n.x(0)
    neg = n.emit(ops.less, x, n.scalar(0, x))
    return n.emit(ops.where, neg, _expm1_scaled(n, x, n.attr("alpha", 1.0)), x, out=0)


@handles("Selu")
def _selu(n: NodeCtx) -> Value:
    x = n.x(0)
    alpha, gamma = n.attr("alpha", 1.67326319217681884765625), n.attr("gamma",
                                                                        1.05070102214813232421875)
    neg = n.emit(ops.less_equal, x, n.scalar(0, x))
    y = n.emit(ops.where, neg, _expm1_scaled(n, x, alpha), x)
    return n.emit(ops.mul, y, n.scalar(gamma, x), out=0)


@handles("Celu")
def _celu(n: NodeCtx) -> Value:
    x = n.x(0)
    alpha = n.attr("alpha", 1.0)
    zero = n.scalar(0, x)
    neg = _expm1_scaled(n, n.emit(ops.div, x, n.scalar(alpha, x)), alpha)
    return n.emit(ops.add, n.emit(ops.maximum, x, zero), n.emit(ops.minimum, neg, zero), out=0)


def _hard_sigmoid(n: NodeCtx, x: Value, alpha: float, beta: float, out: int | None) -> Value:
    y = n.emit(ops.add, n.emit(ops.mul, x, n.scalar(alpha, x)), n.scalar(beta, x))
    return n.emit(ops.clip, y, min=0.0, max=1.0, out=out)


@handles("HardSigmoid")
def _hardsigmoid(n: NodeCtx) -> Value:
    return _hard_sigmoid(n, n.x(0), n.attr("alpha", 0.2), n.attr("beta", 0.5), 0)


@handles("HardSwish")
def _hardswish(n: NodeCtx) -> Value:
    x = n.x(0)
    return n.emit(ops.mul, x, _hard_sigmoid(n, x, 1 / 6, 0.5, None), out=0)


@handles("Softsign")
def _softsign(n: NodeCtx) -> Value:
    x = n.x(0)
    return n.emit(ops.div, x, n.emit(ops.add, n.emit(ops.abs_, x), n.scalar(1, x)), out=0)


@handles("Mish")
def _mish(n: NodeCtx) -> Value:
    x = n.x(0)
    return n.emit(ops.mul, x, n.emit(ops.tanh, n.emit(ops.softplus, x)), out=0)


@handles("Swish")
def _swish(n: NodeCtx) -> Value:
    x = n.x(0)
    ax = n.emit(ops.mul, x, n.scalar(n.attr("alpha", 1.0), x))
    return n.emit(ops.mul, x, n.emit(ops.sigmoid, ax), out=0)


@handles("ThresholdedRelu")
def _thresholded_relu(n: NodeCtx) -> Value:
    x = n.x(0)
    above = n.emit(ops.greater, x, n.scalar(n.attr("alpha", 1.0), x))
    return n.emit(ops.where, above, x, n.scalar(0, x), out=0)


@handles("Shrink")
def _shrink(n: NodeCtx) -> Value:
    x = n.x(0)
    lambd, bias = n.attr("lambd", 0.5), n.attr("bias", 0.0)
    lo = n.emit(ops.less, x, n.scalar(-lambd, x))
    hi = n.emit(ops.greater, x, n.scalar(lambd, x))
    y = n.emit(ops.where, hi, n.emit(ops.sub, x, n.scalar(bias, x)), n.scalar(0, x))
    return n.emit(ops.where, lo, n.emit(ops.add, x, n.scalar(bias, x)), y, out=0)


@handles("IsInf")
def _isinf(n: NodeCtx) -> Value:
    x = n.x(0)
    pos = n.emit(ops.equal, x, n.scalar(math.inf, x)) if n.attr("detect_positive", 1) else None
    neg = n.emit(ops.equal, x, n.scalar(-math.inf, x)) if n.attr("detect_negative", 1) else None
    if pos is not None and neg is not None:
        return n.emit(ops.logical_or, pos, neg, out=0)
    if pos is None and neg is None:
        return n.emit(ops.equal, x, n.scalar(math.nan, x), out=0)  # always false
    return n.emit(ops.identity, pos if pos is not None else neg, out=0)


# ---- trigonometric and hyperbolic functions ----
@handles("Tan")
def _tan(n: NodeCtx) -> Value:
    x = n.x(0)
    return n.emit(ops.div, n.emit(ops.sin, x), n.emit(ops.cos, x), out=0)


@handles("Sinh", "Cosh")
def _sinh_cosh(n: NodeCtx) -> Value:
    x = n.x(0)
    e, em = n.emit(ops.exp, x), n.emit(ops.exp, n.emit(ops.neg, x))
    s = n.emit(ops.sub if n.op_type == "Sinh" else ops.add, e, em)
    return n.emit(ops.mul, s, n.scalar(0.5, x), out=0)


@handles("Asinh", "Acosh")
def _asinh_acosh(n: NodeCtx) -> Value:
    x = n.x(0)
    sq = n.emit(ops.mul, x, x)
    sq = n.emit(ops.add if n.op_type == "Asinh" else ops.sub, sq, n.scalar(1, x))
    return n.emit(ops.log, n.emit(ops.add, x, n.emit(ops.sqrt, sq)), out=0)


@handles("Atanh")
def _atanh(n: NodeCtx) -> Value:
    x = n.x(0)
    one = n.scalar(1, x)
    ratio = n.emit(ops.div, n.emit(ops.add, one, x), n.emit(ops.sub, one, x))
    return n.emit(ops.mul, n.emit(ops.log, ratio), n.scalar(0.5, x), out=0)
