"""NumPy kernels for lbdl_graph.ops.reduce (ONNX semantics).

Reductions keep the input dtype. Integer sums and products wrap like ONNX Runtime's; the narrow
floats (float16, bfloat16, float8) accumulate in float32 and are rounded once at the end.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError
from lbdl_graph.shapes import normalize_axes, normalize_axis

from . import KERNELS
from .elementwise import kind_of

__all__: list[str] = []

Array = np.ndarray
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _acc_dtype(x: Array) -> np.dtype[Any]:
    """The dtype x's arithmetic runs in (float32 for the narrow floats)."""
    if x.dtype not in _NATIVE_FLOATS and kind_of(x) == "float":
        return np.dtype(np.float32)
    return x.dtype


def _acc(x: Array) -> Array:
    """x converted to its accumulation dtype."""
    return x.astype(_acc_dtype(x), copy=False)


def _axes(x: Array, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    return normalize_axes(axes, x.ndim)


@KERNELS.register(ops.reduce_sum)
def _reduce_sum_kernel(x: Array, *, axes: tuple[int, ...] | None, keepdims: bool) -> Array:
    """Sum over axes (None: all, (): none); the empty sum is 0."""
    if axes == ():
        return x
    out = np.sum(_acc(x), axis=_axes(x, axes), keepdims=keepdims, dtype=_acc_dtype(x))
    return np.asarray(out).astype(x.dtype, copy=False)


@KERNELS.register(ops.reduce_prod)
def _reduce_prod_kernel(x: Array, *, axes: tuple[int, ...] | None, keepdims: bool) -> Array:
    """Product over axes (None: all, (): none); the empty product is 1."""
    if axes == ():
        return x
    out = np.prod(_acc(x), axis=_axes(x, axes), keepdims=keepdims, dtype=_acc_dtype(x))
    return np.asarray(out).astype(x.dtype, copy=False)


@KERNELS.register(ops.reduce_mean)
def _reduce_mean_kernel(x: Array, *, axes: tuple[int, ...] | None, keepdims: bool) -> Array:
    """Mean over axes (None: all, (): none); integer means truncate toward zero (ONNX)."""
    if axes == ():
        return x
    # the mean of an empty set is NaN (0/0); that is the answer, not a reason to warn
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.mean(_acc(x), axis=_axes(x, axes), keepdims=keepdims, dtype=_acc_dtype(x))
    return np.asarray(out).astype(x.dtype, copy=False)


def _identity_of(x: Array, highest: bool) -> Any:
    """The identity of max (x's lowest value) or of min (its highest value)."""
    kind = kind_of(x)
    if kind == "bool":
        return highest
    if kind in ("int", "uint"):
        info = ml_dtypes.iinfo(x.dtype)
        return info.max if highest else info.min
    return np.inf if highest else -np.inf


def _extreme(x: Array, axes: tuple[int, ...] | None, keepdims: bool, fn: Any,
             highest: bool) -> Array:
    ax = _axes(x, axes)
    # ONNX: max over an empty set is -inf (the dtype's lowest integer), min is +inf
    init = {"initial": _identity_of(x, highest)} if x.size == 0 else {}
    out = fn(_acc(x), axis=ax, keepdims=keepdims, **init)
    return np.asarray(out).astype(x.dtype, copy=False)


@KERNELS.register(ops.reduce_max)
def _reduce_max_kernel(x: Array, *, axes: tuple[int, ...] | None, keepdims: bool) -> Array:
    """Max over axes (None: all, (): none); NaN propagates."""
    return x if axes == () else _extreme(x, axes, keepdims, np.max, highest=False)


@KERNELS.register(ops.reduce_min)
def _reduce_min_kernel(x: Array, *, axes: tuple[int, ...] | None, keepdims: bool) -> Array:
    """Min over axes (None: all, (): none); NaN propagates."""
    return x if axes == () else _extreme(x, axes, keepdims, np.min, highest=True)


def _arg(x: Array, axis: int, keepdims: bool, fn: Any, what: str) -> Array:
    a = normalize_axis(axis, x.ndim)
    if x.shape[a] == 0:
        raise ShapeError(f"{what} over axis {axis} of length 0 (shape {list(x.shape)})")
    # NumPy returns the first index of the extreme value, as ONNX's select_last_index=0
    return np.asarray(fn(_acc(x), axis=a, keepdims=keepdims)).astype(np.int64, copy=False)


@KERNELS.register(ops.argmax)
def _argmax_kernel(x: Array, *, axis: int, keepdims: bool) -> Array:
    """int64 index of the first maximum along axis."""
    return _arg(x, axis, keepdims, np.argmax, "argmax")


@KERNELS.register(ops.argmin)
def _argmin_kernel(x: Array, *, axis: int, keepdims: bool) -> Array:
    """int64 index of the first minimum along axis."""
    return _arg(x, axis, keepdims, np.argmin, "argmin")


def _shifted(x: Array, axis: int) -> Array:
    """x minus its max along axis, so that exp cannot overflow."""
    return x - np.max(x, axis=axis, keepdims=True)


@KERNELS.register(ops.softmax)
def _softmax_kernel(x: Array, *, axis: int) -> Array:
    """exp(x) / sum(exp(x)) along axis."""
    a = normalize_axis(axis, x.ndim)
    if x.size == 0:
        return x
    e = np.exp(_shifted(_acc(x), a))
    return np.asarray(e / np.sum(e, axis=a, keepdims=True)).astype(x.dtype, copy=False)


@KERNELS.register(ops.log_softmax)
def _log_softmax_kernel(x: Array, *, axis: int) -> Array:
    """x - logsumexp(x) along axis."""
    a = normalize_axis(axis, x.ndim)
    if x.size == 0:
        return x
    t = _shifted(_acc(x), a)
    out = t - np.log(np.sum(np.exp(t), axis=a, keepdims=True))
    return np.asarray(out).astype(x.dtype, copy=False)


@KERNELS.register(ops.cumsum)
def _cumsum_kernel(x: Array, *, axis: int, exclusive: bool, reverse: bool) -> Array:
    """Cumulative sum along axis; ``exclusive`` leaves out the current element, ``reverse``
    sums from the end."""
    a = normalize_axis(axis, x.ndim)
    v = np.flip(x, a) if reverse else x
    out = np.cumsum(_acc(v), axis=a, dtype=_acc_dtype(v))
    if exclusive:
        lead = [slice(None)] * x.ndim
        lead[a] = slice(0, -1)
        zeros = np.zeros_like(np.take(out, [0], axis=a)) if x.shape[a] else out[tuple(lead)]
        out = np.concatenate([zeros, out[tuple(lead)]], axis=a)
    if reverse:
        out = np.flip(out, a)
    return np.asarray(out).astype(x.dtype, copy=False)


@KERNELS.register(ops.kth_largest)
def _kth_largest_kernel(x: Array, *, k: int) -> Array:
    """The k-th largest entry of x over all axes (+inf for k=0)."""
    if k == 0:
        return np.asarray(np.inf, dtype=x.dtype)
    flat = x.ravel()
    return np.asarray(np.partition(flat, flat.size - k)[flat.size - k], dtype=x.dtype)


@KERNELS.register(ops.top_k)
def _top_k_kernel(x: Array, *, k: int, axis: int, largest: bool) -> tuple[Array, Array]:
    """The k largest (smallest) entries along axis, sorted; ties go to the lower index."""
    a = axis % x.ndim
    if largest:  # a stable ascending sort of the flipped axis, reversed: ties keep index order
        n = x.shape[a]
        order = (n - 1) - np.flip(np.argsort(np.flip(x, a), axis=a, kind="stable"), a)
    else:
        order = np.argsort(x, axis=a, kind="stable")
    idx = np.take(order, np.arange(k), axis=a).astype(np.int64)
    return np.take_along_axis(x, idx, axis=a), idx
