"""Leaves of a model: :class:`Parameter` (trainable weights) and :class:`Buffer` (state such as
BatchNorm running statistics). Both hold a NumPy array and act as tensors inside a trace."""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph.dtypes import DType, dtype
from lbdl_graph.graph import Value

from .context import current_state
from .tensor import Tensor

__all__ = ["Buffer", "Parameter"]


def _array(data: Any) -> np.ndarray:
    if isinstance(data, _Leaf):
        return data.data
    if isinstance(data, np.ndarray):
        return data
    arr = np.asarray(data)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


class _Leaf(Tensor):
    """A tensor backed by an array; inside a trace it reads as a graph parameter.

    Tracing shares the array with the graph instead of copying it (:meth:`share`): the graph
    gets a read-only view and the leaf copies its array the next time ``data`` is read, so
    writes through ``data`` never reach a graph traced earlier.
    """

    __slots__ = ("_data", "_shared")

    def __init__(self, data: Any) -> None:
        self._data: np.ndarray = _array(data)
        self._shared = False
        dtype(self._data.dtype)  # unsupported dtypes fail here, not at trace time

    @property
    def data(self) -> np.ndarray:
        """The array (a private copy is made first if a graph shares the current one)."""
        if self._shared:
            self._data = self._data.copy()
            self._shared = False
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = _array(value)
        self._shared = False

    def share(self) -> np.ndarray:
        """A read-only view of the array for a graph; the leaf copies before its next write."""
        self._shared = True
        view = self._data.view()
        view.flags.writeable = False
        return view

    @property
    def value(self) -> Value:
        """The graph parameter standing for this leaf in the active trace."""
        return current_state().value_of(self)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the data."""
        return tuple(int(d) for d in self._data.shape)

    @property
    def dtype(self) -> DType:
        """The element type of the data."""
        return dtype(self._data.dtype)

    @property
    def ndim(self) -> int:
        """The rank of the data."""
        return self._data.ndim

    def numel(self) -> int:
        """Number of elements."""
        return int(self._data.size)

    def __array__(self, dt: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.data if dt is None else self.data.astype(dt)


class Parameter(_Leaf):
    """A trainable weight. ``requires_grad=False`` freezes it (a non-trainable graph param)."""

    __slots__ = ("requires_grad",)

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data)
        self.requires_grad = bool(requires_grad)

    def requires_grad_(self, flag: bool = True) -> Parameter:
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = bool(flag)
        return self

    def __repr__(self) -> str:
        t = f"{self.dtype.short}[{','.join(str(d) for d in self.shape)}]"
        return f"Parameter({t}, requires_grad={self.requires_grad})"


class Buffer(_Leaf):
    """Non-trainable module state (running statistics, constant tables); ``persistent=False``
    leaves it out of the state dict."""

    __slots__ = ("persistent",)

    def __init__(self, data: Any, persistent: bool = True) -> None:
        super().__init__(data)
        self.persistent = bool(persistent)

    @property
    def requires_grad(self) -> bool:
        """Buffers are never trained."""
        return False

    def __repr__(self) -> str:
        t = f"{self.dtype.short}[{','.join(str(d) for d in self.shape)}]"
        return f"Buffer({t})"
