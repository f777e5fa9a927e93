"""ONNX lowerings of the reductions, arg-reductions, softmax and cumsum."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType
from lbdl_graph.shapes import Dim, normalize_axes

from .lowering import LOWERINGS, OnnxBuilder, onnx_dtype

__all__: list[str] = []


def _reduce(onnx_type: str) -> Callable[..., str]:
    def rule(b: OnnxBuilder, x: str, *, axes: tuple[int, ...] | None, keepdims: bool) -> str:
        t = b.in_type(0)
        if axes == ():  # our "reduce over no axis" is the identity
            return b.op("Identity", x)
        y = _emit_reduce(b, onnx_type, x, axes, keepdims, t.dtype)
        if not t.dtype.is_float:
            return y
        if onnx_type == "ReduceMean" and _static_count(t.shape, axes) == 0:
            # the mean of nothing is 0/0 = NaN (as NumPy), not ONNX Runtime's 0
            return b.op("Div", y, b.scalar(0.0, t.dtype, name="zero"), dtype=t.dtype)
        if onnx_type in ("ReduceMax", "ReduceMin"):
            # NaN propagates, as in NumPy (ONNX Runtime's ReduceMax/Min skip NaNs)
            nan = b.op("Cast", b.op("IsNaN", x), to=onnx_dtype(t.dtype))
            any_nan = _emit_reduce(b, "ReduceMax", nan, axes, keepdims, t.dtype)
            is_nan = b.op("Greater", any_nan, b.scalar(0, t.dtype, name="zero"), dtype=t.dtype,
                          back=False)
            return b.op("Where", is_nan, b.scalar(np.nan, t.dtype, name="nan"), y,
                        dtype=t.dtype, data=(1, 2))
        return y

    rule.__name__ = f"_{onnx_type.lower()}_onnx"
    return rule


def _emit_reduce(b: OnnxBuilder, onnx_type: str, x: str, axes: tuple[int, ...] | None,
                 keepdims: bool, dt: DType) -> str:
    if axes is None:  # no axes input: ONNX reduces over all axes
        return b.op(onnx_type, x, dtype=dt, keepdims=int(keepdims))
    if onnx_type == "ReduceSum" or b.opset >= 18:  # axes became an input
        return b.op(onnx_type, x, b.ints(axes, name="axes"), dtype=dt, data=(0,),
                    keepdims=int(keepdims))
    return b.op(onnx_type, x, dtype=dt, axes=list(axes), keepdims=int(keepdims))


def _static_count(shape: tuple[Dim, ...], axes: tuple[int, ...] | None) -> int | None:
    """How many elements each output reduces over, if static."""
    dims = [shape[a] for a in normalize_axes(axes, len(shape))]
    return math.prod(dims) if all(isinstance(d, int) for d in dims) else None  # type: ignore


LOWERINGS.register(ops.reduce_sum)(_reduce("ReduceSum"))
LOWERINGS.register(ops.reduce_mean)(_reduce("ReduceMean"))
LOWERINGS.register(ops.reduce_max)(_reduce("ReduceMax"))
LOWERINGS.register(ops.reduce_min)(_reduce("ReduceMin"))
LOWERINGS.register(ops.reduce_prod)(_reduce("ReduceProd"))


@LOWERINGS.register(ops.argmax)
def _argmax_onnx(b: OnnxBuilder, x: str, *, axis: int, keepdims: bool) -> str:
    return b.op("ArgMax", x, dtype=b.in_type(0).dtype, back=False, axis=axis,
                keepdims=int(keepdims), select_last_index=0)


@LOWERINGS.register(ops.argmin)
def _argmin_onnx(b: OnnxBuilder, x: str, *, axis: int, keepdims: bool) -> str:
    return b.op("ArgMin", x, dtype=b.in_type(0).dtype, back=False, axis=axis,
                keepdims=int(keepdims), select_last_index=0)


@LOWERINGS.register(ops.softmax)
def _softmax_onnx(b: OnnxBuilder, x: str, *, axis: int) -> str:
    return b.op("Softmax", x, dtype=b.in_type(0).dtype, axis=axis)


@LOWERINGS.register(ops.log_softmax)
def _log_softmax_onnx(b: OnnxBuilder, x: str, *, axis: int) -> str:
    return b.op("LogSoftmax", x, dtype=b.in_type(0).dtype, axis=axis)


@LOWERINGS.register(ops.cumsum)
def _cumsum_onnx(b: OnnxBuilder, x: str, *, axis: int, exclusive: bool, reverse: bool) -> str:
    return b.op("CumSum", x, b.scalar(axis, "int64", name="axis"), dtype=b.in_type(0).dtype,
                data=(0,), exclusive=int(exclusive), reverse=int(reverse))


@LOWERINGS.register(ops.kth_largest)
def _kth_largest_onnx(b: OnnxBuilder, x: str, *, k: int) -> str:
    dt = b.in_type(0).dtype
    if k == 0:
        return b.op("Identity", b.scalar(np.inf, dt, name="inf"))
    flat = b.op("Reshape", x, b.ints([-1], name="flat"))
    values = b.op_n("TopK", 2, flat, b.ints([k], name="k"), dtype=dt, data=(0,), back=(0,),
                    axis=0, largest=1, sorted=1)[0]
    last = b.op("Slice", values, b.ints([k - 1], name="start"), b.ints([k], name="end"))
    return b.op("Reshape", last, b.ints([], name="scalar"))


@LOWERINGS.register(ops.top_k)
def _top_k_onnx(b: OnnxBuilder, x: str, *, k: int, axis: int, largest: bool) -> tuple[str, ...]:
    values, idx = b.op_n("TopK", 2, x, b.ints([k], name="k"), dtype=b.in_type(0).dtype,
                         data=(0,), back=(0,), axis=axis, largest=int(largest), sorted=1)
    return values, idx
