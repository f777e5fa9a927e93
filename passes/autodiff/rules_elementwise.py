"""VJP rules of the elementwise ops: unary math, binary arithmetic, where, clip and cast.

Cotangents keep the broadcast output shape; the driver sums them back to each input's shape.
Ties: ``maximum``/``minimum`` split the cotangent evenly between equal operands (like torch);
``relu`` and ``leaky_relu`` use the left derivative at 0 (relu'(0) = 0), ``abs'(0) = 0``.
"""

from __future__ import annotations

import math
from typing import Any

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .helpers import scalar
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


def _where0(cond: Value, g: Value) -> Value:
    """``g`` where ``cond`` holds, else 0."""
    out: Value = ops.where(cond, g, scalar(0.0, g))
    return out


# ---- unary math ----
@VJPS.register(ops.identity)
def _identity_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (g,)  # d x = dx


@VJPS.register(ops.all_reduce)
def _all_reduce_vjp(g: Value, out: Value, x: Value, *, group: str) -> Grads:
    return (ops.all_reduce(g, group=group),)  # each output is the sum of every input


@VJPS.register(ops.neg)
def _neg_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.neg(g),)  # d(-x) = -dx


@VJPS.register(ops.abs_)
def _abs_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.mul(g, ops.sign(x)),)  # d|x| = sign(x) dx


@VJPS.register(ops.exp)
def _exp_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.mul(g, out),)  # d exp(x) = exp(x) dx


@VJPS.register(ops.log)
def _log_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.div(g, x),)  # d log(x) = dx / x


@VJPS.register(ops.sqrt)
def _sqrt_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.div(g, ops.mul(out, scalar(2.0, out))),)  # d sqrt(x) = dx / (2 sqrt(x))


@VJPS.register(ops.reciprocal)
def _reciprocal_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.neg(ops.mul(g, ops.mul(out, out))),)  # d(1/x) = -dx / x^2


@VJPS.register(ops.sin)
def _sin_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.mul(g, ops.cos(x)),)  # d sin(x) = cos(x) dx


@VJPS.register(ops.cos)
def _cos_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.neg(ops.mul(g, ops.sin(x))),)  # d cos(x) = -sin(x) dx


@VJPS.register(ops.tanh)
def _tanh_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.mul(g, ops.sub(scalar(1.0, out), ops.mul(out, out))),)  # d tanh = (1 - tanh^2) dx


@VJPS.register(ops.sigmoid)
def _sigmoid_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.mul(g, ops.mul(out, ops.sub(scalar(1.0, out), out))),)  # d s = s (1 - s) dx


@VJPS.register(ops.relu)
def _relu_vjp(g: Value, out: Value, x: Value) -> Grads:
    # d relu(x) = [x > 0] dx, and x > 0 exactly where relu(x) > 0 (NaN included): reading the
    # output leaves the pre-activation a single reader, so ONNX Runtime fuses Gemm(+Relu) and
    # the pre-activation is freed at once. g * float(x > 0) rather than where(x > 0, g, 0):
    # ONNX Runtime's CPU Mul + Cast is 1.1-1.6x faster (median) than its Where over (64, 256)
    # to (32, 16, 32, 32) activations (benchmarks/relu_grad.py, two runs at load 5-6)
    return (ops.mul(g, ops.cast(ops.greater(out, scalar(0.0, out)), to=g.dtype)),)


@VJPS.register(ops.erf)
def _erf_vjp(g: Value, out: Value, x: Value) -> Grads:
    # d erf(x) = 2/sqrt(pi) exp(-x^2) dx
    bump = ops.exp(ops.neg(ops.mul(x, x)))
    return (ops.mul(g, ops.mul(bump, scalar(2.0 / math.sqrt(math.pi), x))),)


@VJPS.register(ops.softplus)
def _softplus_vjp(g: Value, out: Value, x: Value) -> Grads:
    return (ops.mul(g, ops.sigmoid(x)),)  # d log(1 + e^x) = sigmoid(x) dx


@VJPS.register(ops.leaky_relu)
def _leaky_relu_vjp(g: Value, out: Value, x: Value, *, alpha: float) -> Grads:
    # d leaky_relu(x) = (1 if x > 0 else alpha) dx
    slope = ops.where(ops.greater(x, scalar(0.0, x)), scalar(1.0, x), scalar(alpha, x))
    return (ops.mul(g, slope),)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


@VJPS.register(ops.gelu)
def _gelu_vjp(g: Value, out: Value, x: Value, *, approximate: str) -> Grads:
    def c(v: float) -> Value:
        return scalar(v, x)

    x2 = ops.mul(x, x)
    if approximate == "tanh":
        # y = x/2 (1 + t), t = tanh(u), u = x (c + c a x^2):
        # dy = [(1 + t)/2 + q (1 - t^2)] dx with q = x (c/2 + 3 c a x^2 / 2),
        # arranged as 1/2 + q + t (1/2 - q t): 14 full-size passes instead of 18 (the backward
        # of every GPT MLP runs it over N x T x 4d elements)
        ca = _GELU_C * _GELU_A
        t = ops.tanh(ops.mul(x, ops.add(ops.mul(x2, c(ca)), c(_GELU_C))))
        q = ops.mul(x, ops.add(ops.mul(x2, c(1.5 * ca)), c(0.5 * _GELU_C)))
        slope = ops.add(ops.add(ops.mul(t, ops.sub(c(0.5), ops.mul(q, t))), q), c(0.5))
    else:
        # d x Phi(x) = [Phi(x) + x phi(x)] dx, Phi = (1 + erf(x/√2))/2, phi = e^(-x²/2)/√(2π)
        cdf = ops.mul(c(0.5), ops.add(c(1.0), ops.erf(ops.mul(x, c(1 / math.sqrt(2.0))))))
        pdf = ops.mul(c(1 / math.sqrt(2 * math.pi)), ops.exp(ops.mul(c(-0.5), x2)))
        slope = ops.add(cdf, ops.mul(x, pdf))
    return (ops.mul(g, slope),)


@VJPS.register(ops.clip)
def _clip_vjp(g: Value, out: Value, x: Value, *, min: float | None,
              max: float | None) -> Grads:
    # d clip(x) = [min <= x <= max] dx   (bounds included, like torch.clamp)
    conds = [ops.greater_equal(x, scalar(min, x))] if min is not None else []
    conds += [ops.less_equal(x, scalar(max, x))] if max is not None else []
    if not conds:
        return (g,)
    cond = conds[0] if len(conds) == 1 else ops.logical_and(*conds)
    return (_where0(cond, g),)


@VJPS.register(ops.cast)
def _cast_vjp(g: Value, out: Value, x: Value, *, to: Any) -> Grads:
    # d cast(x) = cast(dx) back to x's float type (int/bool inputs never get here)
    return (ops.cast(g, to=x.dtype) if x.dtype.is_float else None,)


# ---- binary arithmetic ----
@VJPS.register(ops.add)
def _add_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    return (g, g)  # d(a + b) = da + db


@VJPS.register(ops.sub)
def _sub_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    return (g, ops.neg(g))  # d(a - b) = da - db


@VJPS.register(ops.mul)
def _mul_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    return (ops.mul(g, b), ops.mul(g, a))  # d(a b) = b da + a db


@VJPS.register(ops.div)
def _div_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    ga = ops.div(g, b)
    return (ga, ops.neg(ops.mul(ga, out)))  # d(a / b) = da / b - (a / b) db / b


@VJPS.register(ops.pow_)
def _pow_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    # d a^b = b a^(b-1) da + a^b log(a) db   (the db term is 0 where a <= 0)
    ga = ops.mul(g, ops.mul(b, ops.pow_(a, ops.sub(b, scalar(1.0, b)))))
    pos = ops.greater(a, scalar(0.0, a))
    log_a = ops.log(ops.where(pos, a, scalar(1.0, a)))
    return (ga, ops.mul(g, ops.mul(out, log_a)))


def _minmax_vjp(g: Value, a: Value, b: Value, a_wins: Value) -> Grads:
    """Route ``g`` to the winning operand; ties split it in half."""
    dt = g.dtype
    share = ops.add(ops.cast(a_wins, to=dt),
                    ops.mul(ops.cast(ops.equal(a, b), to=dt), scalar(0.5, g)))
    ga = ops.mul(g, share)
    return (ga, ops.sub(g, ga))


@VJPS.register(ops.maximum)
def _maximum_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    return _minmax_vjp(g, a, b, ops.greater(a, b))  # d max(a, b) = [a > b] da + [b > a] db


@VJPS.register(ops.minimum)
def _minimum_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    return _minmax_vjp(g, a, b, ops.less(a, b))  # d min(a, b) = [a < b] da + [b < a] db


@VJPS.register(ops.where)
def _where_vjp(g: Value, out: Value, cond: Value, a: Value, b: Value) -> Grads:
    # d where(c, a, b) = [c] da + [not c] db
    zero = scalar(0.0, g)
    return (None, ops.where(cond, g, zero), ops.where(cond, zero, g))
