"""Helpers behind :class:`~lbdl_graph.frontends.tensor.Tensor`'s operators: operand promotion,
indexing, and the translation of PyTorch-style shape arguments to IR attributes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import DTypeError, OpError, ShapeError
from lbdl_graph.opdef import OpDef
from lbdl_graph.ops.shape import INT_MAX
from lbdl_graph.shapes import Dim, fmt_shape, normalize_axis

from ._tensor_math import TensorMath
from .tensor import Tensor, as_tensor, error

__all__ = [
    "axes_of",
    "binary",
    "chunk",
    "expand",
    "flatten",
    "floor_div",
    "getitem",
    "logic",
    "operands",
    "reduce",
    "reshape_target",
    "shape_args",
    "split",
    "true_div",
    "unary",
    "where",
]


def operands(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors; a scalar or array becomes a constant of the other's dtype."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a, b
    if isinstance(a, Tensor):
        return a, as_tensor(b, a.dtype)
    if isinstance(b, Tensor):
        return as_tensor(a, b.dtype), b
    raise error(OpError, f"expected a Tensor operand, got {type(a).__name__} and "
                f"{type(b).__name__}")


def unary(op: OpDef, x: TensorMath) -> Tensor:
    """Apply a one-input op."""
    return Tensor(op(x.value))


def binary(op: OpDef, a: Any, b: Any) -> Tensor:
    """Apply a two-input op after promoting scalars to constants."""
    x, y = operands(a, b)
    return Tensor(op(x.value, y.value))


def true_div(a: Any, b: Any) -> Tensor:
    """``a / b``; integers are divided as float32, as in PyTorch."""
    x, y = operands(a, b)
    if not x.dtype.is_float and not y.dtype.is_float:
        x, y = x.float(), y.float()
    return Tensor(ops.div(x.value, y.value))


def floor_div(a: Any, b: Any) -> Tensor:
    """``a // b`` rounding toward minus infinity (the IR's integer div truncates toward 0)."""
    x, y = operands(a, b)
    if x.dtype.is_float:
        return Tensor(ops.floor(ops.div(x.value, y.value)))
    q = Tensor(ops.div(x.value, y.value))
    inexact = (q * y) != x
    opposite = (x < 0) != (y < 0)
    return q - (inexact & opposite).to(q.dtype)


def logic(bool_op: OpDef | None, int_op: OpDef, a: Any, b: Any) -> Tensor:
    """``&``, ``|``, ``^``: logical on bool tensors, bitwise on integers."""
    x, y = operands(a, b)
    if x.dtype.is_bool:
        if bool_op is None:  # xor of bools
            return x != y
        return Tensor(bool_op(x.value, y.value))
    if x.dtype.is_integer:
        return Tensor(int_op(x.value, y.value))
    raise error(DTypeError, f"logical/bitwise operators need bool or integer tensors, got "
                f"{x.type} and {y.type}")


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``cond`` else ``b``; scalars take the other branch's dtype."""
    c = cond if isinstance(cond, Tensor) else as_tensor(np.asarray(cond, dtype=bool))
    if not c.dtype.is_bool:
        raise error(DTypeError, f"where: condition must be bool, got {c.type}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        dt = np.result_type(np.asarray(a), np.asarray(b))
        dt = np.dtype(np.float32) if dt == np.float64 else dt
        a, b = as_tensor(a, dt), as_tensor(b, dt)
    x, y = operands(a, b)
    return Tensor(ops.where(c.value, x.value, y.value))


def axes_of(dim: int | Sequence[int]) -> list[int]:
    """``dim`` as a list of axes."""
    return [int(dim)] if isinstance(dim, int | np.integer) else [int(d) for d in dim]


def reduce(op: OpDef, x: TensorMath, dim: int | Sequence[int] | None, keepdim: bool
           ) -> Tensor:
    """A reduction over ``dim`` (None: every axis)."""
    axes = None if dim is None else axes_of(dim)
    return Tensor(op(x.value, axes=axes, keepdims=keepdim))


def shape_args(args: Sequence[Any]) -> list[Any]:
    """``f(2, 3)`` and ``f((2, 3))`` both give ``[2, 3]``; NumPy ints become ints."""
    seq = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
    return [d if isinstance(d, str) else int(d) for d in seq]


def reshape_target(src: Sequence[Dim], target: Sequence[Dim]) -> list[int]:
    """Translate a PyTorch reshape target to the IR's: a dim equal to the input dim at the same
    position becomes 0 (copy), one remaining unknown (a symbolic name or -1) becomes -1."""
    out: list[int] = []
    unknown: list[str] = []
    for i, d in enumerate(target):
        same = i < len(src) and src[i] == d
        if isinstance(d, str):
            out.append(0 if same else -1)
            if not same:
                unknown.append(d)
        elif d == -1:
            out.append(-1)
            unknown.append("-1")
        elif d == 0 and not same:
            raise error(ShapeError, f"reshape {fmt_shape(src)} to {tuple(target)}: zero-size dims "
                        "are not supported")
        elif d < -1:
            raise error(ShapeError, f"reshape {fmt_shape(src)} to {tuple(target)}: invalid dim {d}")
        else:
            out.append(int(d))
    if len(unknown) > 1:
        raise error(ShapeError, f"cannot reshape {fmt_shape(src)} to {tuple(target)}: "
                    f"{len(unknown)} dims ({', '.join(unknown)}) are unknown and only one can be "
                    "inferred", hint="keep symbolic dims at their input positions")
    return out


def flatten(x: Tensor, start: int, end: int) -> Tensor:
    """Merge dims ``start..end`` (inclusive)."""
    if x.ndim == 0:
        return x.reshape(1)
    s, e = normalize_axis(start, x.ndim), normalize_axis(end, x.ndim)
    if s > e:
        raise error(ShapeError, f"flatten: start_dim {start} comes after end_dim {end} for "
                    f"{x.type}")
    if s == e:
        return x
    mid = x.shape[s:e + 1]
    static = all(isinstance(d, int) for d in mid)
    merged: Dim = math.prod(mid) if static else -1
    return x.reshape([*x.shape[:s], merged, *x.shape[e + 1:]])


def expand(x: Tensor, sizes: Sequence[Dim]) -> Tensor:
    """Broadcast to ``sizes``: -1 or the same dim keeps the input dim, a size-1 dim grows."""
    if len(sizes) < x.ndim:
        raise error(ShapeError, f"expand: {x.type} has more dims than the target {tuple(sizes)}")
    have = (1,) * (len(sizes) - x.ndim) + x.shape
    out: list[int] = []
    for i, (want, h) in enumerate(zip(sizes, have, strict=True)):
        if want == -1 and i < len(sizes) - x.ndim:
            raise error(ShapeError, f"expand: -1 is not allowed for the new leading dim {i}")
        if want == -1 or want == h:
            out.append(1)
        elif h == 1 and isinstance(want, int):
            out.append(want)
        elif h == 1:
            raise error(ShapeError, f"expand: cannot grow dim {i} of {x.type} to the symbolic "
                        f"size {want}", hint="use x.expand_as(other) with a tensor of that shape")
        else:
            raise error(ShapeError, f"expand: cannot expand {x.type} to {tuple(sizes)} (dim {i}: "
                        f"{h} vs {want})")
    return Tensor(ops.expand(x.value, shape=out))


def split(x: Tensor, split_size: int | Sequence[int], dim: int) -> list[Tensor]:
    """Split along ``dim`` into pieces of ``split_size`` (the last may be smaller) or of the
    given sizes."""
    a = normalize_axis(dim, x.ndim)
    if isinstance(split_size, int | np.integer):
        d = x.shape[a]
        if not isinstance(d, int):
            raise error(ShapeError, f"split by size needs a static dim, got {x.type} (dim {dim})",
                        hint="pass explicit sizes")
        if split_size <= 0:
            raise error(ShapeError, f"split size must be positive, got {split_size}")
        sizes = [min(int(split_size), d - i) for i in range(0, d, int(split_size))] or [0]
    else:
        sizes = [int(s) for s in split_size]
    return [Tensor(v) for v in ops.split(x.value, axis=a, split=sizes)]


def chunk(x: Tensor, chunks: int, dim: int) -> list[Tensor]:
    """Split into ``chunks`` pieces of ``ceil(d / chunks)`` (PyTorch may return fewer)."""
    a = normalize_axis(dim, x.ndim)
    d = x.shape[a]
    if not isinstance(d, int):
        raise error(ShapeError, f"chunk needs a static dim, got {x.type} (dim {dim})")
    if chunks <= 0:
        raise error(ShapeError, f"chunk count must be positive, got {chunks}")
    return split(x, max(1, -(-d // chunks)), a)


def _is_int(it: Any) -> bool:
    return isinstance(it, int | np.integer) and not isinstance(it, bool | np.bool_)


def _index_tensor(it: Any) -> Tensor:
    idx = it if isinstance(it, Tensor) else as_tensor(np.asarray(it))
    if idx.dtype.is_bool:
        raise error(ShapeError, f"boolean mask indexing gives a data-dependent shape ({idx.type})",
                    hint="use masked_fill or F.where")
    if not idx.dtype.is_integer:
        raise error(DTypeError, f"index tensors must be integers, got {idx.type}")
    return idx


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` for ints, slices, None, ``...`` and one integer index tensor (or list)."""
    items = list(index) if isinstance(index, tuple) else [index]
    n_ell = sum(1 for it in items if it is Ellipsis)
    if n_ell > 1:
        raise error(ShapeError, "an index can only have a single ellipsis ('...')")
    used = sum(1 for it in items if it is not None and it is not Ellipsis)
    if used > x.ndim:
        raise error(ShapeError, f"too many indices ({used}) for {x.type}")
    if n_ell:
        i = next(k for k, it in enumerate(items) if it is Ellipsis)
        items[i:i + 1] = [slice(None)] * (x.ndim - used)
    else:
        items += [slice(None)] * (x.ndim - used)
    if sum(1 for it in items if not (it is None or isinstance(it, slice) or _is_int(it))) > 1:
        raise error(ShapeError, "only one index tensor per indexing expression is supported",
                    hint="index one dim at a time")
    starts: list[int] = []
    ends: list[int] = []
    axes: list[int] = []
    steps: list[int] = []
    ax = 0
    for it in items:
        if it is None:
            continue
        d = x.shape[ax]
        if isinstance(it, slice):
            if it != slice(None):
                step = 1 if it.step is None else int(it.step)
                if step == 0:
                    raise error(ShapeError, "slice step cannot be zero")
                default_start, default_end = (0, INT_MAX) if step > 0 else (INT_MAX, -INT_MAX)
                starts.append(default_start if it.start is None else int(it.start))
                ends.append(default_end if it.stop is None else int(it.stop))
                axes.append(ax)
                steps.append(step)
        elif _is_int(it):
            i = int(it)
            if isinstance(d, int) and not -d <= i < d:
                raise error(ShapeError, f"index {i} is out of range for dim {ax} of {x.type}")
            starts.append(i)
            ends.append(INT_MAX if i == -1 else i + 1)
            axes.append(ax)
            steps.append(1)
        ax += 1
    t = x
    if axes:
        t = Tensor(ops.slice_(x.value, starts=starts, ends=ends, axes=axes,
                              steps=None if all(s == 1 for s in steps) else steps))
    ax = 0
    for it in items:
        if it is None:
            t = Tensor(ops.unsqueeze(t.value, axes=[ax]))
            ax += 1
        elif isinstance(it, slice):
            ax += 1
        elif _is_int(it):
            t = Tensor(ops.squeeze(t.value, axes=[ax]))
        else:
            idx = _index_tensor(it)
            t = Tensor(ops.gather(t.value, idx.value, axis=ax))
            ax += idx.ndim
    return t
