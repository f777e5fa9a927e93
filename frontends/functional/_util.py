"""Argument helpers shared by the functional API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph.errors import DTypeError, ShapeError

from ..tensor import Tensor, as_tensor, error

__all__ = ["const", "float_tensor", "ntuple"]


def ntuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    """``v`` repeated ``n`` times if an int, else checked to have ``n`` entries."""
    if isinstance(v, int | np.integer):
        return (int(v),) * n
    t = tuple(int(a) for a in v)
    if len(t) != n:
        raise error(ShapeError, f"{what} needs {n} value(s), got {tuple(v)}")
    return t


def float_tensor(x: Any, what: str) -> Tensor:
    """``x`` as a Tensor, which must be floating point."""
    t = as_tensor(x)
    if not t.dtype.is_float:
        raise error(DTypeError, f"{what} expects a float tensor, got {t.type}",
                    hint="convert with .float()")
    return t


def const(value: Any, like: Tensor) -> Tensor:
    """A constant with ``like``'s dtype."""
    return as_tensor(np.asarray(value), like.dtype)
