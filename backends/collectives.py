"""The run-time binding of collective ops (``all_reduce``) to the processes of a run.

A *reducer* ``(array, group) -> array`` returns the sum of ``array`` over the processes of
``group``. :func:`bind` makes one current for the block it guards (a context variable, so
threads and nested runs keep their own); the NumPy kernel of ``all_reduce`` and the segmented
ONNX Runtime runner both call :func:`reduce`. With no reducer bound, a group is this process
alone and the reduction is the identity.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["Reducer", "bind", "bound", "reduce"]

Reducer = Callable[[np.ndarray, str], np.ndarray]

_REDUCER: contextvars.ContextVar[Reducer | None] = contextvars.ContextVar(
    "lbdl_graph_reducer", default=None)


@contextmanager
def bind(reducer: Reducer | None) -> Iterator[None]:
    """Make ``reducer`` the one collectives use inside the block (None: a lone process)."""
    token = _REDUCER.set(reducer)
    try:
        yield
    finally:
        _REDUCER.reset(token)


def bound() -> Reducer | None:
    """The reducer bound now, if any."""
    return _REDUCER.get()


def reduce(x: np.ndarray, group: str) -> np.ndarray:
    """The sum of ``x`` over ``group`` (``x`` itself when nothing is bound)."""
    reducer = _REDUCER.get()
    if reducer is None:
        return x
    out = np.asarray(reducer(np.array(x, copy=True), group))
    return out.astype(x.dtype, copy=False)
