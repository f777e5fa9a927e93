"""The static type of a value: a dtype plus a (possibly symbolic) shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .dtypes import DType, dtype
from .shapes import Dim, Shape, fmt_shape, is_static, numel, shape_of

__all__ = ["TensorType", "tensor_type"]


@dataclass(frozen=True, slots=True)
class TensorType:
    """Dtype and shape of a tensor; dims are ints or symbolic names."""

    dtype: DType
    shape: Shape

    @property
    def ndim(self) -> int:
        """Rank of the tensor."""
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True if no dim is symbolic."""
        return is_static(self.shape)

    @property
    def numel(self) -> int | None:
        """Element count, or None when a dim is symbolic."""
        return numel(self.shape)

    def nbytes(self, bindings: dict[str, int] | None = None) -> int | None:
        """Bytes needed to hold the tensor, resolving symbolic dims from ``bindings``."""
        dims = [bindings.get(d) if isinstance(d, str) and bindings else d for d in self.shape]
        ints = [d for d in dims if isinstance(d, int)]
        if len(ints) != len(dims):
            return None
        return int(math.prod(ints) * self.dtype.bits + 7) // 8

    def with_shape(self, shape: Sequence[Dim]) -> TensorType:
        """Same dtype, another shape."""
        return replace(self, shape=shape_of(shape))

    def with_dtype(self, dt: Any) -> TensorType:
        """Same shape, another dtype."""
        return replace(self, dtype=dtype(dt))

    def __str__(self) -> str:
        return f"{self.dtype.short}{fmt_shape(self.shape)}"


def tensor_type(dt: Any, shape: Sequence[Dim]) -> TensorType:
    """Build a TensorType from anything :func:`lbdl_graph.dtypes.dtype` accepts and a shape."""
    return TensorType(dtype(dt), shape_of(shape))
