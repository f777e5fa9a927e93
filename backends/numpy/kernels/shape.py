"""NumPy kernels for lbdl_graph.ops.shape (ONNX semantics).

Layout kernels return NumPy views where NumPy does (reshape, transpose, slice, expand):
kernels never write into their inputs, so sharing memory is safe. Index kernels check their
indices first, so that a bad index raises an :class:`ExecutionError` naming the op rather than
a bare NumPy ``IndexError``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType
from lbdl_graph.errors import ExecutionError, OpError, ShapeError
from lbdl_graph.shapes import normalize_axes, normalize_axis, reshape_shape

from . import KERNELS

__all__: list[str] = []

Array = np.ndarray


@KERNELS.register(ops.reshape)
def _reshape_kernel(x: Array, *, shape: tuple[int, ...]) -> Array:
    """ONNX Reshape: 0 copies the input dim, one -1 is inferred."""
    return x.reshape(reshape_shape(x.shape, shape))


@KERNELS.register(ops.transpose)
def _transpose_kernel(x: Array, *, perm: tuple[int, ...] | None) -> Array:
    """Permute the axes (None reverses them)."""
    if perm is not None and sorted(normalize_axis(a, x.ndim) for a in perm) != list(
            range(x.ndim)):
        raise ShapeError(f"transpose: perm {perm} is not a permutation of {x.ndim} axes")
    return np.transpose(x, perm)


@KERNELS.register(ops.squeeze)
def _squeeze_kernel(x: Array, *, axes: tuple[int, ...] | None) -> Array:
    """Remove the given size-1 axes (None: every size-1 axis)."""
    if axes is None:
        return np.squeeze(x)
    ax = normalize_axes(axes, x.ndim)
    if any(x.shape[a] != 1 for a in ax):
        raise ShapeError(f"squeeze: axes {axes} of shape {list(x.shape)} are not all size 1")
    return np.squeeze(x, axis=ax)


@KERNELS.register(ops.unsqueeze)
def _unsqueeze_kernel(x: Array, *, axes: tuple[int, ...]) -> Array:
    """Insert size-1 axes; ``axes`` index the output."""
    return np.expand_dims(x, normalize_axes(axes, x.ndim + len(axes)))


@KERNELS.register(ops.concat)
def _concat_kernel(*xs: Array, axis: int) -> Array:
    """Join the inputs along axis."""
    a = normalize_axis(axis, xs[0].ndim)
    if any(t.ndim != xs[0].ndim for t in xs) or len({
            t.shape[:a] + t.shape[a + 1:] for t in xs}) > 1:
        raise ShapeError(f"concat along axis {axis}: shapes "
                         f"{', '.join(str(list(t.shape)) for t in xs)} do not fit")
    return np.concatenate(xs, axis=a)


@KERNELS.register(ops.split)
def _split_kernel(x: Array, *, axis: int, split: tuple[int, ...]) -> tuple[Array, ...]:
    """Cut x into pieces of the given sizes along axis."""
    a = normalize_axis(axis, x.ndim)
    if sum(split) != x.shape[a] or any(s < 0 for s in split):
        raise ShapeError(f"split sizes {split} do not add up to dim {x.shape[a]} of shape "
                         f"{list(x.shape)}")
    return tuple(np.split(x, np.cumsum(split[:-1]), axis=a))


def onnx_slice(dim: int, start: int, end: int, step: int) -> slice:
    """The Python slice that selects what ONNX Slice selects on an axis of length ``dim``.

    ONNX clamps a negative-step start to ``dim-1`` and end to ``-1`` *before* iterating, where
    Python maps a start below ``-dim`` to "before the first element": ``x[-10::-1]`` is empty
    in Python but holds ``x[0]`` in ONNX.
    """
    if step == 0:
        raise ShapeError("slice step must not be 0")
    s = start + dim if start < 0 else start
    e = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(s, 0), dim), min(max(e, 0), dim), step)
    s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
    return slice(s, None if e < 0 else e, step) if s >= 0 else slice(0, 0, 1)


@KERNELS.register(ops.slice_)
def _slice_kernel(x: Array, *, starts: tuple[int, ...], ends: tuple[int, ...],
                  axes: tuple[int, ...] | None, steps: tuple[int, ...] | None) -> Array:
    """ONNX Slice: per-axis start/end/step with clamping."""
    ax = tuple(range(len(starts))) if axes is None else axes
    st = (1,) * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(ax) == len(st):
        raise ShapeError("slice: starts, ends, axes and steps must have the same length")
    index = [slice(None)] * x.ndim
    for s, e, a, k in zip(starts, ends, ax, st, strict=True):
        i = normalize_axis(a, x.ndim)
        index[i] = onnx_slice(x.shape[i], s, e, k)
    return x[tuple(index)]


def _checked_indices(indices: Array, dim: int, what: str) -> Array:
    """Indices with negatives wrapped once; raise if any lies outside [-dim, dim)."""
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        bad = indices[(indices < -dim) | (indices >= dim)].flat[0]
        raise ExecutionError(f"{what}: index {bad} is out of range for an axis of length {dim}")
    return np.where(indices < 0, indices + dim, indices) if (indices < 0).any() else indices


@KERNELS.register(ops.gather)
def _gather_kernel(data: Array, indices: Array, *, axis: int) -> Array:
    """Take entries of data along axis; negative indices count from the end."""
    a = normalize_axis(axis, data.ndim)
    idx = _checked_indices(indices, data.shape[a], "gather")
    return np.asarray(np.take(data, idx, axis=a))


def _element_index(data: Array, indices: Array, axis: int, what: str) -> tuple[Array, ...]:
    """The full index tuple for GatherElements / ScatterElements: ``indices`` on ``axis``,
    the element's own position on every other axis."""
    if indices.ndim != data.ndim:
        raise ShapeError(f"{what}: indices of shape {list(indices.shape)} and data of shape "
                         f"{list(data.shape)} differ in rank")
    a = normalize_axis(axis, data.ndim)
    if any(n > d for i, (n, d) in enumerate(zip(indices.shape, data.shape, strict=True))
           if i != a):
        raise ShapeError(f"{what}: indices of shape {list(indices.shape)} exceed data of shape "
                         f"{list(data.shape)} outside axis {axis}")
    grid = list(np.ogrid[tuple(slice(n) for n in indices.shape)])
    grid[a] = _checked_indices(indices, data.shape[a], what)
    return tuple(grid)


@KERNELS.register(ops.gather_elements)
def _gather_elements_kernel(data: Array, indices: Array, *, axis: int) -> Array:
    """out[i][j] = data[indices[i][j]][j] (axis 0); output has the shape of indices."""
    return np.asarray(data[_element_index(data, indices, axis, "gather_elements")])


_UFUNC_AT: dict[str, Any] = {
    "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum,
}


def _scatter(out: Array, index: Any, updates: Array, reduction: str) -> Array:
    """Write or accumulate updates into ``out`` (a fresh copy) at ``index``."""
    if reduction == "none":
        out[index] = updates  # duplicate indices: the last update wins
    elif reduction in _UFUNC_AT:
        _UFUNC_AT[reduction].at(out, index, updates)  # .at accumulates duplicates
    else:
        raise OpError(f"unknown scatter reduction {reduction!r}; use none, add, mul, max, min")
    return out


@KERNELS.register(ops.scatter_elements)
def _scatter_elements_kernel(data: Array, indices: Array, updates: Array, *, axis: int,
                             reduction: str) -> Array:
    """Copy of data with updates[i][j] written (or reduced) at [indices[i][j]][j] (axis 0)."""
    if indices.shape != updates.shape:
        raise ShapeError(f"scatter_elements: indices {list(indices.shape)} and updates "
                         f"{list(updates.shape)} differ in shape")
    index = _element_index(data, indices, axis, "scatter_elements")
    return _scatter(data.copy(), index, updates, reduction)


@KERNELS.register(ops.scatter_nd)
def _scatter_nd_kernel(data: Array, indices: Array, updates: Array, *,
                       reduction: str) -> Array:
    """Copy of data with slices ``updates[i...]`` written (or reduced) at ``indices[i...]``."""
    k = indices.shape[-1] if indices.ndim else -1
    if not 0 <= k <= data.ndim or updates.shape != indices.shape[:-1] + data.shape[k:]:
        raise ShapeError(f"scatter_nd: indices {list(indices.shape)} and updates "
                         f"{list(updates.shape)} do not fit data {list(data.shape)}")
    # Flatten the first k axes of data so that every index row becomes one linear index;
    # this also covers k == 0, where every row addresses the whole tensor.
    rows = indices.reshape(math.prod(indices.shape[:-1]), k)
    lead = data.shape[:k]
    linear = np.zeros(rows.shape[0], dtype=np.int64)
    for j, dim in enumerate(lead):
        linear = linear * dim + _checked_indices(rows[:, j], dim, "scatter_nd")
    out = data.copy().reshape((math.prod(lead), *data.shape[k:]))
    flat_updates = updates.reshape((rows.shape[0], *data.shape[k:]))
    return _scatter(out, linear, flat_updates, reduction).reshape(data.shape)


@KERNELS.register(ops.expand)
def _expand_kernel(x: Array, *, shape: tuple[int, ...]) -> Array:
    """Broadcast x with ``shape`` (bidirectional, like ONNX Expand); a read-only view."""
    try:
        target = np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ShapeError(f"expand: shape {list(x.shape)} cannot broadcast with {list(shape)}"
                         ) from None
    return np.broadcast_to(x, target)


@KERNELS.register(ops.broadcast_like)
def _broadcast_like_kernel(x: Array, like: Array) -> Array:
    """Broadcast x against like's shape; a read-only view."""
    return _expand_kernel(x, shape=like.shape)


@KERNELS.register(ops.pad)
def _pad_kernel(x: Array, *, pads: tuple[int, ...], mode: str, value: float) -> Array:
    """Pad (begins..., ends...) per axis; negative pads crop first, as ONNX Runtime does."""
    n = x.ndim
    if len(pads) != 2 * n:
        raise ShapeError(f"pads {pads} must have 2*rank = {2 * n} entries for shape "
                         f"{list(x.shape)}")
    if mode not in ("constant", "reflect", "edge"):
        raise OpError(f"pad: unknown mode {mode!r}; use constant, reflect or edge")
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for b, e, d in zip(pads[:n], pads[n:],
                                                                         x.shape, strict=True))
    if any(c.start > c.stop for c in crop):
        raise ShapeError(f"pad: negative pads {pads} remove more than shape {list(x.shape)}")
    if n == 0:
        return x  # a scalar has no axes to pad (np.pad rejects an empty pad_width)
    v = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(pads[:n], pads[n:], strict=True)]
    if mode == "constant":
        return np.pad(v, width, constant_values=np.asarray(value).astype(x.dtype))
    if any(d == 0 and w != (0, 0) for d, w in zip(v.shape, width, strict=True)):
        raise ShapeError(f"pad: mode {mode!r} cannot pad an empty axis (shape {list(v.shape)})")
    # NumPy reflects again and again; ONNX Runtime rejects pads beyond one reflection
    if mode == "reflect" and any(max(w) >= d for d, w in zip(v.shape, width, strict=True)
                                 if w != (0, 0)):
        raise ShapeError(f"pad: reflect pads {pads} must be smaller than the (cropped) dims "
                         f"{list(v.shape)}")
    return np.pad(v, width, mode="reflect" if mode == "reflect" else "edge")


@KERNELS.register(ops.tile)
def _tile_kernel(x: Array, *, repeats: tuple[int, ...]) -> Array:
    """Repeat x ``repeats[i]`` times along axis i."""
    if len(repeats) != x.ndim or any(r < 0 for r in repeats):
        raise ShapeError(f"tile: repeats {repeats} do not fit shape {list(x.shape)}")
    return np.tile(x, repeats)


@KERNELS.register(ops.constant)
def _constant_kernel(*, value: Array) -> Array:
    """The literal (a read-only array shared by every run)."""
    return value


@KERNELS.register(ops.full_like)
def _full_like_kernel(like: Array, *, value: float, dtype: DType | None) -> Array:
    """like's shape filled with value, in ``dtype`` (default: like's)."""
    dt = like.dtype if dtype is None else dtype.numpy
    return np.full(like.shape, np.asarray(value).astype(dt), dtype=dt)


@KERNELS.register(ops.iota_like)
def _iota_like_kernel(like: Array, *, axis: int | None) -> Array:
    """int64 flat element index of like's shape, or the index along ``axis``."""
    if axis is None:
        return np.arange(like.size, dtype=np.int64).reshape(like.shape)
    a = normalize_axis(axis, like.ndim)
    line = np.arange(like.shape[a], dtype=np.int64).reshape(
        [-1 if i == a else 1 for i in range(like.ndim)])
    return np.broadcast_to(line, like.shape)


@KERNELS.register(ops.space_to_depth)
def _space_to_depth_kernel(x: Array, *, blocksize: int) -> Array:
    """(N, C, H, W) -> (N, b*b*C, H/b, W/b), block offsets before channels."""
    n, c, h, w = x.shape
    b = blocksize
    t = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(t).reshape(n, c * b * b, h // b, w // b)


@KERNELS.register(ops.depth_to_space)
def _depth_to_space_kernel(x: Array, *, blocksize: int) -> Array:
    """(N, b*b*C, H, W) -> (N, C, H*b, W*b) (DCR), the inverse of space_to_depth."""
    n, c, h, w = x.shape
    b = blocksize
    t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return np.ascontiguousarray(t).reshape(n, c // (b * b), h * b, w * b)


@KERNELS.register(ops.max_unpool)
def _max_unpool_kernel(x: Array, indices: Array, like: Array, *, kernel_shape: tuple[int, ...],
                       strides: tuple[int, ...] | None, pads: tuple[int, ...] | None) -> Array:
    """Zeros shaped like ``like`` with ``x`` written at the flat ``indices`` (ONNX MaxUnpool)."""
    out = np.zeros(like.shape, dtype=x.dtype)
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= out.size):
        raise ShapeError(f"max_unpool: indices outside [0, {out.size}) for output "
                         f"{list(out.shape)}")
    out.reshape(-1)[flat] = x.reshape(-1)
    return out
