"""Pooling (book section 4.4): max, average and adaptive average pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbdl_graph import ops
from lbdl_graph.errors import OpError, ShapeError

from ..tensor import Tensor, error
from ._util import float_tensor, ntuple

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "global_avg_pool",
    "max_pool1d",
    "max_pool2d",
]


def _window(x: Any, kernel_size: Any, stride: Any, padding: Any, k: int, what: str
            ) -> tuple[Tensor, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    t = float_tensor(x, what)
    if t.ndim != k + 2:
        raise error(ShapeError, f"{what} expects a rank-{k + 2} (N, C, ...) input, got {t.type}")
    ks = ntuple(kernel_size, k, f"{what} kernel_size")
    st = ks if stride is None or stride == [] else ntuple(stride, k, f"{what} stride")
    p = ntuple(padding, k, f"{what} padding")
    if min(ks) < 1 or min(st) < 1:
        raise error(ShapeError, f"{what}: kernel_size and stride must be >= 1, got {ks}, {st}")
    if any(2 * pi > ki for pi, ki in zip(p, ks, strict=True)):
        raise error(ShapeError, f"{what}: padding {p} must be at most half the kernel {ks}")
    return t, ks, st, p


def _max_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool, k: int, what: str) -> Tensor:
    if return_indices:
        raise error(OpError, f"{what}: return_indices is not supported (the IR's indices are "
                    "ONNX-style flat indices)")
    t, ks, st, p = _window(x, kernel_size, stride, padding, k, what)
    d = ntuple(dilation, k, f"{what} dilation")
    values, _ = ops.max_pool(t.value, kernel_shape=ks, strides=st, pads=p + p,
                             ceil_mode=ceil_mode, dilations=d)
    return Tensor(values)


def max_pool1d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """Max over sliding windows of an (N, C, L) tensor (stride defaults to the kernel)."""
    return _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1,
                     "max_pool1d")


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """Max over sliding windows of an (N, C, H, W) tensor (stride defaults to the kernel)."""
    return _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2,
                     "max_pool2d")


def _avg_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, k: int, what: str) -> Tensor:
    t, ks, st, p = _window(x, kernel_size, stride, padding, k, what)
    return Tensor(ops.avg_pool(t.value, kernel_shape=ks, strides=st, pads=p + p,
                               ceil_mode=ceil_mode, count_include_pad=count_include_pad))


def avg_pool1d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """Mean over sliding windows of an (N, C, L) tensor; padding counts in the divisor
    unless ``count_include_pad=False`` (PyTorch's default is True)."""
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 1,
                     "avg_pool1d")


def avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """Mean over sliding windows of an (N, C, H, W) tensor."""
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 2,
                     "avg_pool2d")


def _adaptive_axis(t: Tensor, axis: int, out: int, what: str) -> Tensor:
    n = t.shape[axis]
    if out == 1:
        return t.mean(axis, keepdim=True)
    if not isinstance(n, int):
        raise error(ShapeError, f"{what}: output size {out} along dim {axis} needs a static "
                    f"input size, got {t.type}")
    if n == out:
        return t
    # PyTorch's bins: [floor(i*n/out), ceil((i+1)*n/out)), possibly overlapping
    pieces = []
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        index = [slice(None)] * t.ndim
        index[axis] = slice(lo, hi)
        pieces.append(t[tuple(index)].mean(axis, keepdim=True))
    return Tensor(ops.concat(*[p.value for p in pieces], axis=axis))


def _adaptive(x: Any, output_size: Any, k: int, what: str) -> Tensor:
    t = float_tensor(x, what)
    if t.ndim != k + 2:
        raise error(ShapeError, f"{what} expects a rank-{k + 2} (N, C, ...) input, got {t.type}")
    sizes: Sequence[int | None] = (output_size,) * k if isinstance(output_size, int | None) \
        else tuple(output_size)
    if len(sizes) != k or any(s is not None and int(s) < 1 for s in sizes):
        raise error(ShapeError, f"{what}: output_size must be {k} positive ints, got "
                    f"{output_size}")
    spatial = t.shape[2:]
    outs = [spatial[i] if s is None else int(s) for i, s in enumerate(sizes)]
    if all(o == 1 for o in outs):
        return t.mean(list(range(2, t.ndim)), keepdim=True)
    if all(isinstance(n, int) and isinstance(o, int) and n % o == 0
           for n, o in zip(spatial, outs, strict=True)):
        ks = [int(n) // int(o) for n, o in zip(spatial, outs, strict=True)]
        return Tensor(ops.avg_pool(t.value, kernel_shape=ks, strides=ks))
    for i, o in enumerate(outs):
        if o != spatial[i]:
            t = _adaptive_axis(t, 2 + i, int(o), what)
    return t


def adaptive_avg_pool1d(x: Any, output_size: int) -> Tensor:
    """Average (N, C, L) down to (N, C, output_size) with PyTorch's bin edges."""
    return _adaptive(x, output_size, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(x: Any, output_size: Any) -> Tensor:
    """Average (N, C, H, W) down to (N, C, *output_size); None keeps a dim."""
    return _adaptive(x, output_size, 2, "adaptive_avg_pool2d")


def global_avg_pool(x: Any) -> Tensor:
    """Mean over every spatial dim: (N, C, ...) -> (N, C)."""
    t = float_tensor(x, "global_avg_pool")
    if t.ndim < 3:
        raise error(ShapeError, f"global_avg_pool expects (N, C, ...) input, got {t.type}")
    return t.mean(list(range(2, t.ndim)))
