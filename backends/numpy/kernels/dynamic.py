"""NumPy kernels for lbdl_graph.ops.dynamic: shapes given as run-time int64 tensors.

Each kernel follows the ONNX operator of the same role and checks that the result agrees with
the static ints of the node's ``dims`` (symbolic entries are whatever the run gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ExecutionError, ShapeError
from lbdl_graph.shapes import normalize_axis

from . import KERNELS

__all__: list[str] = []

Array = np.ndarray


def _check(op: str, got: Sequence[int], dims: Sequence[Any]) -> None:
    if len(got) != len(dims) or any(isinstance(d, int) and d != g
                                    for d, g in zip(dims, got, strict=False)):
        raise ShapeError(f"{op}: the run-time result has shape {list(got)}, but the graph "
                         f"declares {list(dims)}")


def _ints(v: Array, what: str) -> list[int]:
    if v.dtype.kind not in "iu" or v.ndim > 1:
        raise ExecutionError(f"{what} must be a 1-D int tensor, got {v.dtype}{list(v.shape)}")
    return [int(t) for t in v.reshape(-1)]


@KERNELS.register(ops.shape_of)
def _shape_of_kernel(x: Array, *, start: int, end: int | None) -> Array:
    """x's shape[start:end] as int64 (ONNX Shape)."""
    r = x.ndim
    return np.asarray(x.shape[slice(start, r if end is None else end)], dtype=np.int64)


@KERNELS.register(ops.dynamic_reshape)
def _dynamic_reshape_kernel(x: Array, shape: Array, *, dims: Sequence[Any],
                            allowzero: bool) -> Array:
    """ONNX Reshape: 0 copies the input dim (unless allowzero), one -1 is inferred."""
    target = _ints(shape, "dynamic_reshape shape")
    out = [x.shape[i] if t == 0 and not allowzero and i < x.ndim else t
           for i, t in enumerate(target)]
    if out.count(-1) > 1 or any(t < -1 for t in out):
        raise ShapeError(f"dynamic_reshape: invalid target shape {target}")
    try:
        y = x.reshape(out)
    except ValueError:
        raise ShapeError(f"dynamic_reshape: cannot reshape {list(x.shape)} to {target}") from None
    _check("dynamic_reshape", y.shape, dims)
    return y


@KERNELS.register(ops.dynamic_expand)
def _dynamic_expand_kernel(x: Array, shape: Array, *, dims: Sequence[Any]) -> Array:
    """ONNX Expand: broadcast x with the run-time shape; a read-only view."""
    target = _ints(shape, "dynamic_expand shape")
    try:
        y = np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(target)))
    except ValueError:
        raise ShapeError(f"dynamic_expand: shape {list(x.shape)} cannot broadcast with "
                         f"{target}") from None
    _check("dynamic_expand", y.shape, dims)
    return y


@KERNELS.register(ops.dynamic_slice)
def _dynamic_slice_kernel(x: Array, starts: Array, ends: Array, *, axes: Sequence[int],
                          steps: Sequence[int] | None, dims: Sequence[Any]) -> Array:
    """ONNX Slice with run-time starts and ends (clamped like Python slicing)."""
    st, en = _ints(starts, "dynamic_slice starts"), _ints(ends, "dynamic_slice ends")
    ks = list(steps) if steps is not None else [1] * len(axes)
    if not len(st) == len(en) == len(axes) == len(ks) or 0 in ks:
        raise ShapeError(f"dynamic_slice: starts {st}, ends {en}, axes {list(axes)} and steps "
                         f"{ks} do not fit")
    idx: list[slice] = [slice(None)] * x.ndim
    for s, e, a, k in zip(st, en, axes, ks, strict=True):
        idx[normalize_axis(a, x.ndim)] = slice(s, e, k)
    y = x[tuple(idx)]
    _check("dynamic_slice", y.shape, dims)
    return y


@KERNELS.register(ops.dynamic_range)
def _dynamic_range_kernel(start: Array, limit: Array, delta: Array, *,
                          dims: Sequence[Any]) -> Array:
    """ONNX Range: start, start+delta, ... up to (not including) limit."""
    if not np.all(delta):
        raise ExecutionError("dynamic_range: delta must not be 0")
    y = np.arange(start.item(), limit.item(), delta.item()).astype(start.dtype)
    _check("dynamic_range", y.shape, dims)
    return y
