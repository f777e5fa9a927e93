"""Shape, layout and indexing ops."""

from __future__ import annotations

from typing import Any

from ..dtypes import DType, int64
from ..errors import ShapeError
from ..opdef import Attr, Trait, defop
from ..shapes import (
    Dim,
    add_dims,
    broadcast_shapes,
    fmt_shape,
    normalize_axes,
    normalize_axis,
    reshape_shape,
)
from ..types import TensorType
from ._rules import require, same_dtype

S, D = Trait.SHAPE, Trait.DIFFERENTIABLE
INT_MAX = 2**63 - 1


def _reshape_rule(x: TensorType, *, shape: tuple[int, ...]) -> TensorType:
    return x.with_shape(reshape_shape(x.shape, shape))


reshape = defop("reshape", ("x",), infer=_reshape_rule, attrs=(Attr("shape", "ints"),),
                traits=(S, D), onnx="Reshape",
                doc="new shape; 0 copies the input dim, one -1 is inferred")


def _transpose_rule(x: TensorType, *, perm: tuple[int, ...] | None) -> TensorType:
    p = tuple(range(x.ndim))[::-1] if perm is None else perm
    if sorted(normalize_axis(a, x.ndim) for a in p) != list(range(x.ndim)) or len(p) != x.ndim:
        raise ShapeError(f"perm {p} is not a permutation of the {x.ndim} axes of {x}")
    return x.with_shape([x.shape[normalize_axis(a, x.ndim)] for a in p])


transpose = defop("transpose", ("x",), infer=_transpose_rule,
                  attrs=(Attr("perm", "ints", None, True),), traits=(S, D), onnx="Transpose",
                  doc="permute axes (None reverses them)")


def _squeeze_rule(x: TensorType, *, axes: tuple[int, ...] | None) -> TensorType:
    if axes is None:
        return x.with_shape([d for d in x.shape if d != 1])
    ax = normalize_axes(axes, x.ndim)
    for a in ax:
        if x.shape[a] != 1:
            raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]} in {x}")
    return x.with_shape([d for i, d in enumerate(x.shape) if i not in ax])


squeeze = defop("squeeze", ("x",), infer=_squeeze_rule, attrs=(Attr("axes", "ints", None, True),),
                traits=(S, D), onnx="Squeeze", doc="remove size-1 axes")


def _unsqueeze_rule(x: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    rank = x.ndim + len(axes)
    ax = normalize_axes(axes, rank)
    rest = iter(x.shape)
    return x.with_shape([1 if i in ax else next(rest) for i in range(rank)])


unsqueeze = defop("unsqueeze", ("x",), infer=_unsqueeze_rule, attrs=(Attr("axes", "ints"),),
                  traits=(S, D), onnx="Unsqueeze",
                  doc="insert size-1 axes at positions of the output")


def _concat_rule(*xs: TensorType, axis: int) -> TensorType:
    dt = same_dtype(*xs)
    a = normalize_axis(axis, xs[0].ndim)
    for t in xs[1:]:
        if t.ndim != xs[0].ndim or any(
            d != e for i, (d, e) in enumerate(zip(t.shape, xs[0].shape, strict=True)) if i != a
        ):
            raise ShapeError(f"concat along axis {axis}: shapes "
                             + ", ".join(fmt_shape(s.shape) for s in xs) + " do not fit")
    shape = list(xs[0].shape)
    shape[a] = add_dims([t.shape[a] for t in xs])
    return TensorType(dt, tuple(shape))


concat = defop("concat", ("*xs",), infer=_concat_rule, attrs=(Attr("axis", "int"),),
               traits=(S, D), onnx="Concat", doc="join along axis")


def _split_rule(x: TensorType, *, axis: int, split: tuple[int, ...]) -> tuple[TensorType, ...]:
    a = normalize_axis(axis, x.ndim)
    if isinstance(x.shape[a], int) and sum(split) != x.shape[a]:
        raise ShapeError(f"split sizes {split} do not add up to dim {x.shape[a]} of {x}")
    if any(s < 0 for s in split):
        raise ShapeError(f"negative split size in {split}")
    return tuple(x.with_shape([s if i == a else d for i, d in enumerate(x.shape)])
                 for s in split)


split = defop("split", ("x",), infer=_split_rule,
              attrs=(Attr("axis", "int", 0), Attr("split", "ints")),
              outputs=lambda attrs: len(attrs["split"]), traits=(S, D), onnx="Split",
              doc="cut into pieces of the given sizes along axis")


def _slice_len(d: Dim, start: int, end: int, step: int) -> Dim:
    if isinstance(d, int):
        if step < 0 and start < -d:
            start = 0  # ONNX clamps a backward start to the first element; Python gives empty
        return len(range(d)[slice(start, end, step)])
    if step == 1 and start >= 0 and end >= INT_MAX // 2:
        return d if start == 0 else f"{d}-{start}"
    if step == 1 and start >= 0 and -INT_MAX // 2 < end < 0:
        return f"{d}-{start - end}" if start - end else d
    if step == 1 and start < 0 and end >= INT_MAX // 2:
        return -start
    if step == 1 and 0 <= start <= end < INT_MAX // 2:
        return end - start
    raise ShapeError(f"cannot slice symbolic dim {d} with {start}:{end}:{step}")


def _slice_rule(x: TensorType, *, starts: tuple[int, ...], ends: tuple[int, ...],
                axes: tuple[int, ...] | None, steps: tuple[int, ...] | None) -> TensorType:
    ax = tuple(range(len(starts))) if axes is None else axes
    st = (1,) * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(ax) == len(st):
        raise ShapeError("slice: starts, ends, axes and steps must have the same length")
    shape = list(x.shape)
    for s, e, a, k in zip(starts, ends, ax, st, strict=True):
        if k == 0:
            raise ShapeError("slice step must not be 0")
        i = normalize_axis(a, x.ndim)
        shape[i] = _slice_len(x.shape[i], s, e, k)
    return x.with_shape(shape)


slice_ = defop("slice", ("x",), infer=_slice_rule,
               attrs=(Attr("starts", "ints"), Attr("ends", "ints"),
                      Attr("axes", "ints", None, True), Attr("steps", "ints", None, True)),
               traits=(S, D), onnx="Slice", doc="python-style slicing with clamping (ONNX Slice)")


def _index_check(idx: TensorType) -> None:
    require(idx, "indices", kinds=("int",))


def _gather_rule(data: TensorType, indices: TensorType, *, axis: int) -> TensorType:
    _index_check(indices)
    a = normalize_axis(axis, data.ndim)
    return data.with_shape(data.shape[:a] + indices.shape + data.shape[a + 1:])


gather = defop("gather", ("data", "indices"), infer=_gather_rule,
               attrs=(Attr("axis", "int", 0),), traits=(S, D), onnx="Gather",
               doc="take entries of data along axis (embedding lookup)")


def _gather_elements_rule(data: TensorType, indices: TensorType, *, axis: int) -> TensorType:
    _index_check(indices)
    normalize_axis(axis, data.ndim)
    if indices.ndim != data.ndim:
        raise ShapeError(f"gather_elements: indices {indices} and data {data} differ in rank")
    return data.with_shape(indices.shape)


gather_elements = defop("gather_elements", ("data", "indices"), infer=_gather_elements_rule,
                        attrs=(Attr("axis", "int", 0),), traits=(S, D), onnx="GatherElements",
                        doc="out[i][j] = data[indices[i][j]][j] (axis 0)")

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _scatter_elements_rule(data: TensorType, indices: TensorType, updates: TensorType, *,
                           axis: int, reduction: str) -> TensorType:
    _index_check(indices)
    same_dtype(data, updates)
    normalize_axis(axis, data.ndim)
    if reduction not in _REDUCTIONS:
        raise ShapeError(f"unknown reduction {reduction!r}; use one of {_REDUCTIONS}")
    if tuple(indices.shape) != tuple(updates.shape) or indices.ndim != data.ndim:
        raise ShapeError(f"scatter_elements: indices {indices}, updates {updates} and data "
                         f"{data} do not fit")
    return data


scatter_elements = defop(
    "scatter_elements", ("data", "indices", "updates"), infer=_scatter_elements_rule,
    attrs=(Attr("axis", "int", 0), Attr("reduction", "str", "none")), traits=(S, D),
    onnx="ScatterElements", doc="copy of data with updates written (or accumulated) at indices")


def _scatter_nd_rule(data: TensorType, indices: TensorType, updates: TensorType, *,
                     reduction: str) -> TensorType:
    _index_check(indices)
    same_dtype(data, updates)
    if reduction not in _REDUCTIONS:
        raise ShapeError(f"unknown reduction {reduction!r}; use one of {_REDUCTIONS}")
    k = indices.shape[-1] if indices.ndim else None
    if not isinstance(k, int) or k > data.ndim:
        raise ShapeError(f"scatter_nd: last dim of indices {indices} must be a static int "
                         f"<= rank of data {data}")
    expected = tuple(indices.shape[:-1]) + tuple(data.shape[k:])
    if tuple(updates.shape) != expected:
        raise ShapeError(f"scatter_nd: updates {updates} should have shape {fmt_shape(expected)}")
    return data


scatter_nd = defop("scatter_nd", ("data", "indices", "updates"), infer=_scatter_nd_rule,
                   attrs=(Attr("reduction", "str", "none"),), traits=(S, D), onnx="ScatterND",
                   doc="copy of data with slices updates written (or accumulated) at indices")


def _expand_rule(x: TensorType, *, shape: tuple[int, ...]) -> TensorType:
    return x.with_shape(broadcast_shapes(x.shape, shape))


expand = defop("expand", ("x",), infer=_expand_rule, attrs=(Attr("shape", "ints"),),
               traits=(S, D), onnx="Expand", doc="broadcast to shape (1 keeps the input dim)")


def _broadcast_like_rule(x: TensorType, like: TensorType) -> TensorType:
    return x.with_shape(broadcast_shapes(x.shape, like.shape))


broadcast_like = defop("broadcast_like", ("x", "like"), infer=_broadcast_like_rule,
                       traits=(S, D), onnx="Expand",
                       doc="broadcast x against the shape of like (works with symbolic dims)")


def _pad_rule(x: TensorType, *, pads: tuple[int, ...], mode: str, value: float) -> TensorType:
    if len(pads) != 2 * x.ndim:
        raise ShapeError(f"pads {pads} must have 2*rank = {2 * x.ndim} entries for {x}")
    if mode not in ("constant", "reflect", "edge"):
        raise ShapeError(f"unknown pad mode {mode!r}")
    shape = [add_dims([d, pads[i] + pads[i + x.ndim]]) for i, d in enumerate(x.shape)]
    return x.with_shape(shape)


pad = defop("pad", ("x",), infer=_pad_rule,
            attrs=(Attr("pads", "ints"), Attr("mode", "str", "constant"),
                   Attr("value", "float", 0.0)),
            traits=(S, D), onnx="Pad", doc="pad (begins..., ends...) per axis; ONNX order")


def _tile_rule(x: TensorType, *, repeats: tuple[int, ...]) -> TensorType:
    if len(repeats) != x.ndim:
        raise ShapeError(f"repeats {repeats} must have one entry per axis of {x}")
    return x.with_shape([d * r if isinstance(d, int) else (d if r == 1 else f"{r}*({d})")
                         for d, r in zip(x.shape, repeats, strict=True)])


tile = defop("tile", ("x",), infer=_tile_rule, attrs=(Attr("repeats", "ints"),), traits=(S, D),
             onnx="Tile", doc="repeat the tensor along each axis")


def _constant_rule(*, value: Any) -> TensorType:
    from ..dtypes import dtype

    return TensorType(dtype(value.dtype), tuple(int(d) for d in value.shape))


constant = defop("constant", (), infer=_constant_rule, attrs=(Attr("value", "tensor"),),
                 onnx="Constant", doc="a literal tensor")


def _full_like_rule(like: TensorType, *, value: float, dtype: DType | None) -> TensorType:
    return like if dtype is None else like.with_dtype(dtype)


full_like = defop("full_like", ("like",), infer=_full_like_rule,
                  attrs=(Attr("value", "float", 0.0), Attr("dtype", "dtype", None, True)),
                  onnx="ConstantOfShape",
                  doc="a tensor of like's shape filled with value (dtype defaults to like's)")


def _iota_rule(like: TensorType, *, axis: int | None) -> TensorType:
    if axis is not None:
        normalize_axis(axis, like.ndim)
    return TensorType(int64, like.shape)


iota_like = defop("iota_like", ("like",), infer=_iota_rule,
                  attrs=(Attr("axis", "int", None, True),), onnx="Range",
                  doc="int64 of like's shape: the flat element index, or the index along axis")




def _block_dims(x: TensorType, b: int, what: str) -> tuple[int, int, int]:
    require(x, "input", kinds=("float", "int", "uint", "bool"))
    if x.ndim != 4 or b < 1:
        raise ShapeError(f"{what} takes a 4-D (N, C, H, W) input and blocksize >= 1, got {x} "
                         f"and blocksize {b}")
    c, h, w = x.shape[1:]
    if not all(isinstance(d, int) for d in (c, h, w)):
        raise ShapeError(f"{what} needs static C, H and W, got {x}")
    return int(c), int(h), int(w)


def _space_to_depth_rule(x: TensorType, *, blocksize: int) -> TensorType:
    c, h, w = _block_dims(x, blocksize, "space_to_depth")
    if h % blocksize or w % blocksize:
        raise ShapeError(f"space_to_depth: H and W of {x} must be multiples of {blocksize}")
    return x.with_shape((x.shape[0], c * blocksize**2, h // blocksize, w // blocksize))


def _depth_to_space_rule(x: TensorType, *, blocksize: int) -> TensorType:
    c, h, w = _block_dims(x, blocksize, "depth_to_space")
    if c % blocksize**2:
        raise ShapeError(f"depth_to_space: C of {x} must be a multiple of {blocksize**2}")
    return x.with_shape((x.shape[0], c // blocksize**2, h * blocksize, w * blocksize))


space_to_depth = defop(
    "space_to_depth", ("x",), infer=_space_to_depth_rule, attrs=(Attr("blocksize", "int"),),
    traits=(S, D), onnx="SpaceToDepth",
    doc="b x b blocks of H, W into channels: out[n, (i*b + j)*C + c, h, w] = "
        "x[n, c, h*b + i, w*b + j] (ONNX SpaceToDepth)")
depth_to_space = defop(
    "depth_to_space", ("x",), infer=_depth_to_space_rule, attrs=(Attr("blocksize", "int"),),
    traits=(S, D), onnx="DepthToSpace",
    doc="the inverse of space_to_depth (ONNX DepthToSpace, mode DCR)")
