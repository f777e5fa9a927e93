"""Memory planning hints: which node outputs can share a buffer, and which may be computed in
place, from liveness.

The plan goes into ``graph.metadata["memory_plan"]`` for backends that allocate ahead of time
(the NumPy interpreter ignores it)::

    {"buffers": {value name: buffer id}, "num_buffers": n, "values": m,
     "in_place": {node name: index of the input whose buffer the output reuses}}

A buffer is reused only by a value of the same type (dtype and shape, symbolic dims compared as
written), so the plan holds for every binding of the symbolic dims. Graph inputs, parameters and
outputs never share. The plan describes the graph it was computed for: run this pass last.
"""

from __future__ import annotations

from typing import Any

from lbdl_graph.analysis import last_uses
from lbdl_graph.graph import Graph, Value
from lbdl_graph.opdef import Trait
from lbdl_graph.types import TensorType

from .base import PassResult

__all__ = ["plan_memory"]

KEY = "memory_plan"


def _plan(graph: Graph) -> dict[str, Any]:
    pinned = set(graph.inputs) | {p.value for p in graph.params} | set(graph.outputs)
    free: dict[TensorType, list[int]] = {}
    buffers: dict[str, int] = {}
    in_place: dict[str, int] = {}
    buffer_of: dict[Value, int] = {}
    count = 0
    for node, dead in zip(graph.nodes, last_uses(graph), strict=True):
        dying = [v for v in dead if v in buffer_of and v not in node.outputs]
        for v in node.outputs:
            if v in pinned:
                continue
            pool = free.get(v.type, [])
            reuse = next((i for i, u in enumerate(node.inputs) if node.op.has(Trait.ELEMENTWISE)
                          and u in dying and u.type == v.type), None)
            if reuse is not None:  # the output overwrites an input read for the last time
                u = node.inputs[reuse]
                assert u is not None
                buffer_of[v] = buffer_of[u]
                dying.remove(u)
                in_place[node.name] = reuse
            elif pool:
                buffer_of[v] = pool.pop()
            else:
                buffer_of[v] = count
                count += 1
            buffers[v.name] = buffer_of[v]
        for v in dying:
            free.setdefault(v.type, []).append(buffer_of[v])
        for v in dead:  # outputs nobody reads die at once
            if v in node.outputs and v in buffer_of:
                free.setdefault(v.type, []).append(buffer_of[v])
    return {"buffers": buffers, "num_buffers": count, "values": len(buffers),
            "in_place": in_place}


def plan_memory(graph: Graph) -> PassResult:
    """Store buffer-sharing hints in ``graph.metadata["memory_plan"]``; stats count buffers and
    the values that reuse one."""
    plan = _plan(graph)
    stats = {"buffers": plan["num_buffers"], "reused": plan["values"] - plan["num_buffers"]}
    if graph.metadata.get(KEY) == plan:
        return PassResult(graph, False, stats)
    return PassResult(graph.replace(metadata={**graph.metadata, KEY: plan}), True, stats)
