"""ONNX lowerings of the shape, layout and indexing ops.

Attributes that are inputs in ONNX (shapes, axes, starts/ends, pads, split sizes, repeats)
become int64 initializers; ``*_like`` ops read the runtime shape with ``Shape`` so they work with
symbolic dims.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, int64
from lbdl_graph.errors import OnnxError
from lbdl_graph.shapes import normalize_axes

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []

_NARROW = ("bfloat16", "float8_e4m3fn", "int4", "uint4")


@LOWERINGS.register(ops.reshape)
def _reshape_onnx(b: OnnxBuilder, x: str, *, shape: tuple[int, ...]) -> str:
    return b.op("Reshape", x, b.ints(shape, name="shape"))


@LOWERINGS.register(ops.transpose)
def _transpose_onnx(b: OnnxBuilder, x: str, *, perm: tuple[int, ...] | None) -> str:
    rank = b.in_type(0).ndim
    return b.op("Transpose", x, perm=[a % rank for a in perm] if perm is not None else None)


@LOWERINGS.register(ops.squeeze)
def _squeeze_onnx(b: OnnxBuilder, x: str, *, axes: tuple[int, ...] | None) -> str:
    t = b.in_type(0)
    # explicit axes always: ONNX without axes would also drop symbolic dims that are 1 at run time
    ax = [i for i, d in enumerate(t.shape) if d == 1] if axes is None else list(axes)
    if not ax:
        return b.op("Identity", x)
    return b.op("Squeeze", x, b.ints(ax, name="axes"))


@LOWERINGS.register(ops.unsqueeze)
def _unsqueeze_onnx(b: OnnxBuilder, x: str, *, axes: tuple[int, ...]) -> str:
    return b.op("Unsqueeze", x, b.ints(axes, name="axes"))


@LOWERINGS.register(ops.concat)
def _concat_onnx(b: OnnxBuilder, *xs: str, axis: int) -> str:
    return b.op("Concat", *xs, axis=axis)


@LOWERINGS.register(ops.split)
def _split_onnx(b: OnnxBuilder, x: str, *, axis: int, split: tuple[int, ...]) -> tuple[str, ...]:
    return b.op_n("Split", len(split), x, b.ints(split, name="split"), axis=axis)


@LOWERINGS.register(ops.slice_)
def _slice_onnx(b: OnnxBuilder, x: str, *, starts: tuple[int, ...], ends: tuple[int, ...],
                axes: tuple[int, ...] | None, steps: tuple[int, ...] | None) -> str:
    return b.op("Slice", x, b.ints(starts, name="starts"), b.ints(ends, name="ends"),
                b.ints(axes, name="axes") if axes is not None else None,
                b.ints(steps, name="steps") if steps is not None else None)


@LOWERINGS.register(ops.gather)
def _gather_onnx(b: OnnxBuilder, data: str, indices: str, *, axis: int) -> str:
    return b.op("Gather", data, indices, axis=axis)


@LOWERINGS.register(ops.gather_elements)
def _gather_elements_onnx(b: OnnxBuilder, data: str, indices: str, *, axis: int) -> str:
    return b.op("GatherElements", data, indices, axis=axis)


def _reduction(b: OnnxBuilder, reduction: str) -> str:
    if reduction in ("max", "min") and b.opset < 18:
        raise OnnxError(f"scatter reduction '{reduction}' needs opset >= 18, got {b.opset}")
    return reduction


@LOWERINGS.register(ops.scatter_elements)
def _scatter_elements_onnx(b: OnnxBuilder, data: str, indices: str, updates: str, *, axis: int,
                           reduction: str) -> str:
    return b.op("ScatterElements", data, indices, updates, axis=axis,
                reduction=_reduction(b, reduction))


@LOWERINGS.register(ops.scatter_nd)
def _scatter_nd_onnx(b: OnnxBuilder, data: str, indices: str, updates: str, *,
                     reduction: str) -> str:
    return b.op("ScatterND", data, indices, updates, reduction=_reduction(b, reduction))


@LOWERINGS.register(ops.expand)
def _expand_onnx(b: OnnxBuilder, x: str, *, shape: tuple[int, ...]) -> str:
    return b.op("Expand", x, b.ints(shape, name="shape"), dtype=b.in_type(0).dtype, data=(0,))


@LOWERINGS.register(ops.broadcast_like)
def _broadcast_like_onnx(b: OnnxBuilder, x: str, like: str) -> str:
    return b.op("Expand", x, b.op("Shape", like), dtype=b.in_type(0).dtype, data=(0,))


@LOWERINGS.register(ops.pad)
def _pad_onnx(b: OnnxBuilder, x: str, *, pads: tuple[int, ...], mode: str, value: float) -> str:
    dt = b.in_type(0).dtype
    if b.in_type(0).ndim == 0:  # nothing to pad (ORT's Pad rejects rank 0)
        return b.op("Identity", x)
    fill = b.scalar(value, dt, name="value") if mode == "constant" else None
    return b.op("Pad", x, b.ints(pads, name="pads"), fill, dtype=dt, data=(0, 2), mode=mode)


@LOWERINGS.register(ops.tile)
def _tile_onnx(b: OnnxBuilder, x: str, *, repeats: tuple[int, ...]) -> str:
    return b.op("Tile", x, b.ints(repeats, name="repeats"), dtype=b.in_type(0).dtype, data=(0,))


@LOWERINGS.register(ops.constant)
def _constant_onnx(b: OnnxBuilder, *, value: np.ndarray) -> str:
    return b.op("Constant", value=numpy_helper.from_array(np.array(value)))


@LOWERINGS.register(ops.full_like)
def _full_like_onnx(b: OnnxBuilder, like: str, *, value: float, dtype: DType | None) -> str:
    dt = b.out_type().dtype
    shape = b.op("Shape", like)
    if dt.name in _NARROW:  # ConstantOfShape (and ORT) may lack these: fill float32, then Cast
        fill = numpy_helper.from_array(np.asarray([value], dtype=np.float32))
        return b.cast(b.op("ConstantOfShape", shape, value=fill), dt)
    fill = numpy_helper.from_array(np.asarray([value]).astype(dt.numpy))
    return b.op("ConstantOfShape", shape, value=fill)


@LOWERINGS.register(ops.iota_like)
def _iota_like_onnx(b: OnnxBuilder, like: str, *, axis: int | None) -> str:
    shape = b.op("Shape", like)
    zero, one = b.scalar(0, int64, name="zero"), b.scalar(1, int64, name="one")
    rank = b.in_type(0).ndim
    if axis is None:  # flat element index, laid out in like's shape
        if b.target == "ort" and b.in_type(0).dtype.name == "bfloat16":  # ORT: no bf16 Size
            size = b.op("ReduceProd", shape, keepdims=0)
        else:
            size = b.op("Size", like)
        # allowzero: a 0 in like's shape is a real empty dim, not "copy the input dim"
        return b.op("Reshape", b.op("Range", zero, size, one), shape, allowzero=1)
    return b.op("Expand", iota_column(b, like, shape, axis, rank), shape)


def iota_column(b: OnnxBuilder, like: str, shape: str, axis: int, rank: int) -> str:
    """0..n-1 along ``axis`` of ``like`` (its ONNX ``shape``), with size-1 dims elsewhere."""
    zero, one = b.scalar(0, int64, name="zero"), b.scalar(1, int64, name="one")
    (a,) = normalize_axes((axis,), rank)
    n = b.op("Gather", shape, b.scalar(a, int64, name="axis"), axis=0)
    return b.op("Reshape", b.op("Range", zero, n, one),
                b.ints([-1 if i == a else 1 for i in range(rank)], name="column"))


@LOWERINGS.register(ops.space_to_depth)
def _space_to_depth_onnx(b: OnnxBuilder, x: str, *, blocksize: int) -> str:
    return b.op("SpaceToDepth", x, dtype=b.in_type(0).dtype, blocksize=blocksize)


@LOWERINGS.register(ops.depth_to_space)
def _depth_to_space_onnx(b: OnnxBuilder, x: str, *, blocksize: int) -> str:
    return b.op("DepthToSpace", x, dtype=b.in_type(0).dtype, blocksize=blocksize, mode="DCR")


@LOWERINGS.register(ops.max_unpool)
def _max_unpool_onnx(b: OnnxBuilder, x: str, indices: str, like: str, *,
                     kernel_shape: tuple[int, ...], strides: tuple[int, ...] | None,
                     pads: tuple[int, ...] | None) -> str:
    # the output shape comes from ``like`` at run time (its batch dim may be symbolic)
    shape = b.op("Shape", like)
    dt = b.in_type(0).dtype
    if dt.name in _UNPOOL_TYPES and _unpool_shape_is_inferred(b, kernel_shape, strides, pads):
        return b.op("MaxUnpool", x, indices, shape, kernel_shape=list(kernel_shape),
                    strides=list(strides) if strides else None,
                    pads=list(pads) if pads else None)
    # the same write as a flat scatter: ONNX Runtime has MaxUnpool for float16/32 only, and
    # where the output is not the shape MaxUnpool infers (floor-mode windows that leave a
    # remainder, ceil mode) runtimes read output_shape differently (ORT addresses it, the ONNX
    # reference addresses the inferred shape and pads the end)
    flat = b.ints([-1], name="flat")
    zeros = b.op("ConstantOfShape", b.op("ReduceProd", shape, keepdims=1),
                 value=numpy_helper.from_array(np.zeros(1, dtype=dt.numpy)))
    out = b.op("ScatterElements", zeros, b.op("Reshape", indices, flat),
               b.op("Reshape", x, flat), axis=0)
    return b.op("Reshape", out, shape)


_UNPOOL_TYPES = frozenset({"float16", "float32"})


def _unpool_shape_is_inferred(b: OnnxBuilder, kernel_shape: tuple[int, ...],
                              strides: tuple[int, ...] | None,
                              pads: tuple[int, ...] | None) -> bool:
    """Whether the output's spatial dims are those ONNX MaxUnpool infers from its input."""
    x, like = b.in_type(0), b.in_type(2)
    k = len(kernel_shape)
    s, p = strides or (1,) * k, pads or (0,) * (2 * k)
    for i in range(k):
        n, want = x.shape[2 + i], like.shape[2 + i]
        if not (isinstance(n, int) and isinstance(want, int)):
            return False
        if (n - 1) * s[i] + kernel_shape[i] - p[i] - p[i + k] != want:
            return False
    return True
