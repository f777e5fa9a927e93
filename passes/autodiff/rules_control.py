"""VJP rules of the control-flow ops: ``scan`` and ``loop`` with a static trip count.

The rule unrolls: it re-emits the body once per iteration next to the gradient (slices of the
scan inputs in, stacked outputs out) and backpropagates through those nodes, as the driver does
for decompositions. That needs the iteration count at compile time: a scan length that is an
int, a loop whose ``trip_count`` is a constant node and whose condition stays true. Anything
else (a symbolic length, a data-dependent loop, ``if``) raises an AutodiffError naming the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import current_builder
from lbdl_graph.errors import AutodiffError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.ops.control import scan_layout
from lbdl_graph.shapes import normalize_axis

from .driver import active_values, backprop
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


def _inline(body: Graph, inputs: Sequence[Value]) -> list[Value]:
    """Emit the body's nodes on ``inputs``; returns the values of its outputs."""
    b = current_builder()
    env: dict[Value, Value] = dict(zip(body.inputs, inputs, strict=True))
    for n in body.nodes:
        outs = b.add_node(n.op, [env[v] if v is not None else None for v in n.inputs], n.attrs,
                          name=n.name, source=n.source)
        env.update(zip(n.outputs, outs, strict=True))
    return [env[v] for v in body.outputs]


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


@VJPS.register(ops.scan)
def _scan_vjp(gs: tuple[Value | None, ...], outs: tuple[Value, ...], *operands: Value,
              body: Graph, num_scan_inputs: int, num_captures: int, **layout: Any) -> Grads:
    n_states = len(operands) - num_scan_inputs - num_captures
    xs = operands[n_states:n_states + num_scan_inputs]
    caps = operands[n_states + num_scan_inputs:]
    n_out = len(body.outputs) - n_states
    in_axes, in_dirs, out_axes, out_dirs = scan_layout(num_scan_inputs, n_out, layout)
    axes = [normalize_axis(a, x.ndim) for a, x in zip(in_axes, xs, strict=True)]
    length = xs[0].shape[axes[0]]
    if not isinstance(length, int):
        raise AutodiffError(f"scan over a symbolic length {length!r} cannot be differentiated "
                            "(the VJP unrolls and needs a static length)")
    if n_out and length == 0:
        raise AutodiffError("scan of length 0 with stacked outputs cannot be differentiated")
    start = len(current_builder().nodes)
    states = list(operands[:n_states])
    ys: list[list[Value]] = [[] for _ in range(n_out)]
    for t in range(length):
        slices = []
        for x, a, d in zip(xs, axes, in_dirs, strict=True):
            i = length - 1 - t if d else t
            piece = ops.slice_(x, starts=[i], ends=[i + 1], axes=[a], steps=None)
            slices.append(ops.squeeze(piece, axes=(a,)))
        res = _inline(body, [*states, *slices, *caps])
        states = res[:n_states]
        for k, y in enumerate(res[n_states:]):
            ys[k].append(y)
    stacked = [_stack(p[::-1] if d else p, a) for p, a, d in zip(ys, out_axes, out_dirs,
                                                                 strict=True)]
    return _backprop_unrolled(start, [*states, *stacked], gs, operands)


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
        res = _inline(body, [it, true, *carried, *caps])
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
