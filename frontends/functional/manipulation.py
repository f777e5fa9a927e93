"""Joining, splitting and selecting tensors: cat, stack, split, chunk, where, matmul, and
constant-filled tensors shaped like another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from .. import _tensor_ops as T
from ..tensor import Tensor, as_tensor, error

__all__ = [
    "cat",
    "chunk",
    "concat",
    "full_like",
    "matmul",
    "ones_like",
    "split",
    "stack",
    "where",
    "zeros_like",
]


def _tensors(tensors: Sequence[Any], what: str) -> list[Tensor]:
    ts = [as_tensor(t) for t in tensors]
    if not ts:
        raise error(ShapeError, f"{what} needs at least one tensor")
    return ts


def cat(tensors: Sequence[Any], dim: int = 0) -> Tensor:
    """Concatenate along an existing dim."""
    ts = _tensors(tensors, "cat")
    if len(ts) == 1:
        return ts[0]
    return Tensor(ops.concat(*[t.value for t in ts], axis=dim))


concat = cat


def stack(tensors: Sequence[Any], dim: int = 0) -> Tensor:
    """Join along a new dim."""
    ts = _tensors(tensors, "stack")
    if any(t.shape != ts[0].shape for t in ts):
        raise error(ShapeError, "stack needs tensors of one shape, got "
                    + ", ".join(str(t.type) for t in ts))
    return cat([t.unsqueeze(dim) for t in ts], dim)


def split(x: Any, split_size_or_sections: int | Sequence[int], dim: int = 0) -> list[Tensor]:
    """Split into pieces of a given size (the last may be smaller) or of the given sizes."""
    return T.split(as_tensor(x), split_size_or_sections, dim)


def chunk(x: Any, chunks: int, dim: int = 0) -> list[Tensor]:
    """Split into ``chunks`` nearly equal pieces."""
    return T.chunk(as_tensor(x), chunks, dim)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` else ``y``; scalars take the other branch's dtype."""
    return T.where(condition, x, y)


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with NumPy broadcasting."""
    return T.binary(ops.matmul, a, b)


def full_like(x: Any, value: float, dtype: Any | None = None) -> Tensor:
    """A tensor of ``x``'s shape filled with ``value`` (works with symbolic dims)."""
    return Tensor(ops.full_like(as_tensor(x).value, value=value, dtype=dtype))


def zeros_like(x: Any, dtype: Any | None = None) -> Tensor:
    """Zeros of ``x``'s shape."""
    return full_like(x, 0.0, dtype)


def ones_like(x: Any, dtype: Any | None = None) -> Tensor:
    """Ones of ``x``'s shape."""
    return full_like(x, 1.0, dtype)
