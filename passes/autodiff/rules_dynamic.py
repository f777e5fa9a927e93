"""VJP rules of the run-time-shape ops: dynamic_reshape and dynamic_expand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


@VJPS.register(ops.dynamic_reshape)
def _dynamic_reshape_vjp(g: Value, out: Value, x: Value, shape: Value, *, dims: Sequence[Any],
                         allowzero: bool) -> Grads:
    # reshape the cotangent back to x's run-time shape; the shape operand has no gradient
    back: Value = ops.dynamic_reshape(g, ops.shape_of(x), dims=tuple(x.shape), allowzero=True)
    return (back, None)


@VJPS.register(ops.dynamic_expand)
def _dynamic_expand_vjp(g: Value, out: Value, x: Value, shape: Value, *,
                        dims: Sequence[Any]) -> Grads:
    return (g, None)  # broadcasting: the driver sums g back to x's shape
