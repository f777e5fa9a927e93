"""VJP rules of the control-flow ops ``loop`` (static trip count) and ``if`` (refused).

The loop rule unrolls: it re-emits the body once per iteration next to the gradient (stacked
outputs out) and backpropagates through those nodes, as the driver does for decompositions.
That needs the iteration count at compile time: a loop whose ``trip_count`` is a constant node
and whose condition stays true. Anything else (a data-dependent loop, ``if``) raises an
AutodiffError naming the node. ``scan`` differentiates at any length (``rules_scan.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import current_builder
from lbdl_graph.errors import AutodiffError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.shapes import normalize_axis

from .driver import active_values, backprop
from .helpers import inline_body
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


def _backprop_unrolled(start: int, outs: Sequence[Value], gs: Sequence[Value | None],
                       operands: Sequence[Value | None]) -> Grads:
    """Cotangents of ``operands`` through the nodes emitted since ``start``."""
    b = current_builder()
    inner = b.nodes[start:]
    seeds: dict[Value, Value] = {}
    for o, g in zip(outs, gs, strict=True):
        if g is not None:
            seeds[o] = ops.add(seeds[o], g) if o in seeds else g
    sources = [v for v in operands if v is not None and v.dtype.is_float]
    ct = backprop(inner, seeds, active_values(inner, sources))
    return tuple(ct.get(v) if v is not None else None for v in operands)


def _stack(parts: list[Value], axis: int) -> Value:
    rank = parts[0].ndim + 1
    a = normalize_axis(axis, rank)
    return ops.concat(*[ops.unsqueeze(p, axes=(a,)) for p in parts], axis=a)


def _static_trips(trip_count: Value | None) -> int:
    b = current_builder()
    prod = next((n for n in b.nodes if trip_count is not None and trip_count in n.outputs), None)
    if prod is None or prod.op is not ops.constant:
        raise AutodiffError("loop with a run-time trip count cannot be differentiated (the VJP "
                            "unrolls and needs trip_count to be a constant)")
    return int(np.asarray(prod.attrs["value"]).reshape(-1)[0])


def _cond_stays_true(body: Graph, cond: Value | None) -> bool:
    b = current_builder()
    if cond is not None:
        prod = next((n for n in b.nodes if cond in n.outputs), None)
        if prod is None or prod.op is not ops.constant or not bool(
                np.asarray(prod.attrs["value"]).reshape(-1)[0]):
            return False
    out = body.outputs[0]
    inner = body.producer(out)
    while inner is not None and inner.op is ops.identity and inner.inputs[0] is not None:
        out = inner.inputs[0]
        inner = body.producer(out)
    if out is body.inputs[1]:
        return True
    return inner is not None and inner.op is ops.constant and bool(
        np.asarray(inner.attrs["value"]).reshape(-1)[0])


@VJPS.register(ops.loop)
def _loop_vjp(gs: tuple[Value | None, ...], outs: tuple[Value, ...],
              trip_count: Value | None, cond: Value | None, *operands: Value, body: Graph,
              num_carried: int, trip_dim: Any) -> Grads:
    trips = _static_trips(trip_count)
    if not _cond_stays_true(body, cond):
        raise AutodiffError("loop whose condition is computed at run time cannot be "
                            "differentiated (its trip count is not static)")
    start = len(current_builder().nodes)
    carried, caps = list(operands[:num_carried]), list(operands[num_carried:])
    n_scan = len(body.outputs) - 1 - num_carried
    if n_scan and trips == 0:
        raise AutodiffError("loop of 0 iterations with scan outputs cannot be differentiated")
    true = ops.constant(value=np.asarray(True))
    ys: list[list[Value]] = [[] for _ in range(n_scan)]
    for i in range(trips):
        it = ops.constant(value=np.asarray(i, dtype=np.int64))
        res = inline_body(body, [it, true, *carried, *caps])
        carried = res[1:1 + num_carried]
        for k, y in enumerate(res[1 + num_carried:]):
            ys[k].append(y)
    stacked = [_stack(p, 0) for p in ys]
    grads = _backprop_unrolled(start, [*carried, *stacked], gs, operands)
    return (None, None, *grads)


@VJPS.register(ops.if_)
def _if_vjp(gs: tuple[Value | None, ...], outs: tuple[Value, ...], *operands: Value,
            then_branch: Graph, else_branch: Graph) -> Grads:
    raise AutodiffError("differentiating through 'if' is not supported (only scan and loop "
                        "with a static trip count are)")
