"""ONNX lowerings of the elementwise ops: one ONNX node each, except gelu below opset 20 and
the bitwise ops below opset 18 (emulated with exact int64 arithmetic)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, int64
from lbdl_graph.errors import OnnxError

from .lowering import LOWERINGS, OnnxBuilder, onnx_dtype, simple
from .lowering_shape import iota_column

__all__: list[str] = []

_UNARY = {
    ops.neg: "Neg", ops.abs_: "Abs", ops.exp: "Exp", ops.log: "Log", ops.sqrt: "Sqrt",
    ops.reciprocal: "Reciprocal", ops.sin: "Sin", ops.cos: "Cos", ops.tanh: "Tanh",
    ops.sigmoid: "Sigmoid", ops.relu: "Relu", ops.erf: "Erf", ops.softplus: "Softplus",
    ops.leaky_relu: "LeakyRelu", ops.sign: "Sign", ops.floor: "Floor", ops.ceil: "Ceil",
    ops.round_: "Round",
}
_BINARY = {
    ops.add: "Add", ops.sub: "Sub", ops.mul: "Mul", ops.div: "Div", ops.pow_: "Pow",
    ops.maximum: "Max", ops.minimum: "Min",
}
_COMPARE = {
    ops.equal: "Equal", ops.less: "Less", ops.less_equal: "LessOrEqual",
    ops.greater: "Greater", ops.greater_equal: "GreaterOrEqual", ops.isnan: "IsNaN",
}
_LOGIC = {ops.logical_and: "And", ops.logical_or: "Or", ops.logical_not: "Not"}

for _op, _onnx in {**_UNARY, **_BINARY}.items():
    LOWERINGS.register(_op)(simple(_onnx))


def _iota_axis(b: OnnxBuilder, i: int) -> tuple[int, str] | None:
    """(axis, like's ONNX name) when input ``i`` is ``iota_like(like, axis=axis)``."""
    v = b.node.inputs[i]
    made = b.ctx.producers.get(v) if v is not None else None
    if made is None or made[0].op is not ops.iota_like or made[0].attrs.get("axis") is None:
        return None
    like = made[1][0]
    return (int(made[0].attrs["axis"]), like) if like is not None else None


def compare_rule(op_type: str) -> Callable[..., str]:
    """A comparison; of two iotas of one tensor along different axes (a causal mask, an
    identity) it compares their columns, (T, 1) against (1, T), and expands the bool result,
    instead of comparing two full-size int64 tensors."""
    plain = simple(op_type, back=False)

    def rule(b: OnnxBuilder, *inputs: str | None, **attrs: Any) -> str:
        if len(inputs) == 2:
            x, y = _iota_axis(b, 0), _iota_axis(b, 1)
            vx, vy = b.node.inputs
            if x is not None and y is not None and vx is not None and vy is not None and \
                    x[0] != y[0] and \
                    b.ctx.producers[vx][0].inputs[0] is b.ctx.producers[vy][0].inputs[0]:
                like, rank = x[1], b.out_type().ndim
                shape = b.op("Shape", like)
                cx = iota_column(b, like, shape, x[0], rank)
                cy = iota_column(b, like, shape, y[0], rank)
                return b.op("Expand", b.op(op_type, cx, cy), shape)
        out = plain(b, *inputs, **attrs)
        assert isinstance(out, str)
        return out

    rule.__name__ = f"_{op_type.lower()}_onnx"
    return rule


for _op, _onnx in _COMPARE.items():
    LOWERINGS.register(_op)(compare_rule(_onnx) if _op is not ops.isnan
                            else simple(_onnx, back=False))
for _op, _onnx in _LOGIC.items():
    LOWERINGS.register(_op)(simple(_onnx, typed=False))
LOWERINGS.register(ops.identity, ops.stop_gradient)(simple("Identity", typed=False))
# all_reduce in a lone process (stock ONNX Runtime has no collective op: the data-parallel
# runner cuts graphs at their collectives and reduces between sessions, see segments.py)


@LOWERINGS.register(ops.all_reduce)
def _all_reduce_onnx(b: OnnxBuilder, x: str, *, group: str) -> str:
    return b.op("Identity", x)


@LOWERINGS.register(ops.cast)
def _cast_onnx(b: OnnxBuilder, x: str, *, to: DType) -> str:
    return b.op("Cast", x, to=onnx_dtype(to))


def _clip_bound(b: OnnxBuilder, v: float | None, dt: DType, name: str) -> str | None:
    """A bound in x's dtype, as ONNX Clip takes it; integer bounds saturate."""
    if v is None:
        return None
    if dt.is_integer:
        if math.isnan(v):
            raise OnnxError(f"clip: bound {v} is not valid for an integer input ({dt.name})")
        info = ml_dtypes.iinfo(dt.numpy)
        v = int(min(max(v, info.min), info.max))
    return b.scalar(v, dt, name=name)


@LOWERINGS.register(ops.clip)
def _clip_onnx(b: OnnxBuilder, x: str, *, min: float | None, max: float | None) -> str:
    dt = b.in_type(0).dtype
    return b.op("Clip", x, _clip_bound(b, min, dt, "min"), _clip_bound(b, max, dt, "max"),
                dtype=dt)


@LOWERINGS.register(ops.where)
def _where_onnx(b: OnnxBuilder, cond: str, x: str, y: str) -> str:
    return b.op("Where", cond, x, y, dtype=b.in_type(1).dtype, data=(1, 2))


@LOWERINGS.register(ops.gelu)
def _gelu_onnx(b: OnnxBuilder, x: str, *, approximate: str) -> str:
    dt = b.in_type(0).dtype
    if b.opset >= 20:
        return b.op("Gelu", x, dtype=dt, approximate=approximate)

    def c(v: float) -> str:
        return b.scalar(v, dt, name="c")

    if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = b.op("Mul", b.op("Mul", x, x, dtype=dt), x, dtype=dt)
        inner = b.op("Add", x, b.op("Mul", cube, c(0.044715), dtype=dt), dtype=dt)
        t = b.op("Tanh", b.op("Mul", inner, c(math.sqrt(2.0 / math.pi)), dtype=dt), dtype=dt)
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        t = b.op("Erf", b.op("Mul", x, c(1.0 / math.sqrt(2.0)), dtype=dt), dtype=dt)
    half_x = b.op("Mul", x, c(0.5), dtype=dt)
    return b.op("Mul", half_x, b.op("Add", t, c(1.0), dtype=dt), dtype=dt)


def _bitwise(onnx_type: str, kind: str) -> Callable[..., str]:
    def rule(b: OnnxBuilder, x: str, y: str) -> str:
        dt = b.in_type(0).dtype
        if b.opset >= 18:
            return b.op(onnx_type, x, y, dtype=dt)
        if dt != int64:
            return b.cast(_bitwise_int64(b, b.cast(x, int64), b.cast(y, int64), kind), dt)
        return _bitwise_int64(b, x, y, kind)

    rule.__name__ = f"_bitwise_{kind}_onnx"
    return rule


_TWO62 = 2**62


def _split_sign(b: OnnxBuilder, x: str) -> tuple[str, str]:
    """int64 ``x`` as (u, negative) with u = x mod 2**63 in [0, 2**63), without overflow."""
    neg = b.op("Less", x, b.scalar(0, int64, name="zero"))
    c62 = b.scalar(_TWO62, int64, name="two62")
    return b.op("Where", neg, b.op("Add", b.op("Add", x, c62), c62), x), neg


def _bitwise_int64(b: OnnxBuilder, x: str, y: str, kind: str) -> str:
    """Exact two's complement and/or/xor from 63 bit planes (opset 17 has no Bitwise ops)."""
    pw = b.ints([2**k for k in range(63)], name="pow2")
    last = b.ints([-1], name="axis")
    two = b.scalar(2, int64, name="two")
    (ux, sx), (uy, sy) = _split_sign(b, x), _split_sign(b, y)
    bx = b.op("Mod", b.op("Div", b.op("Unsqueeze", ux, last), pw), two)
    by = b.op("Mod", b.op("Div", b.op("Unsqueeze", uy, last), pw), two)
    both = b.op("Mul", bx, by)
    if kind == "and":
        bits, sign = both, b.op("And", sx, sy)
    elif kind == "or":
        bits, sign = b.op("Sub", b.op("Add", bx, by), both), b.op("Or", sx, sy)
    else:
        bits = b.op("Sub", b.op("Add", bx, by), b.op("Mul", both, two))
        sign = b.op("Xor", sx, sy)
    # MatMul, not ReduceSum: ORT's int64 ReduceSum loses precision near 2**63
    column = b.constant(np.asarray([[2**k] for k in range(63)], dtype=np.int64), name="pow2")
    u = b.op("Squeeze", b.op("MatMul", bits, column), last)
    c62 = b.scalar(_TWO62, int64, name="two62")
    return b.op("Where", sign, b.op("Sub", b.op("Sub", u, c62), c62), u)


LOWERINGS.register(ops.bitwise_and)(_bitwise("BitwiseAnd", "and"))
LOWERINGS.register(ops.bitwise_or)(_bitwise("BitwiseOr", "or"))
LOWERINGS.register(ops.bitwise_xor)(_bitwise("BitwiseXor", "xor"))
