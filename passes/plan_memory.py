"""Memory planning hints: which node outputs can share a buffer, and which may be computed in
place, from liveness.

The plan goes into ``graph.metadata["memory_plan"]`` for backends that allocate ahead of time
(the NumPy interpreter does not read it: it makes its own, stricter in-place choices)::

    {"buffers": {value name: buffer id}, "num_buffers": n, "values": m,
     "in_place": {node name: index of the input whose buffer the output reuses}}

A buffer is reused only by a value of the same type (dtype and shape, symbolic dims compared as
written), so the plan holds for every binding of the symbolic dims. Graph inputs, parameters and
outputs never share. The plan describes the graph it was computed for: run this pass last.

:func:`planned_peak` and :func:`memory_report` turn a plan into bytes for given bindings: the
peak of an interpreter that frees each value after its last read, writes ``in_place`` nodes into
an input's buffer and lets view ops share their input's buffer (the NumPy interpreter's
``memory_report`` passes its own choices), next to the arena an ahead-of-time allocator would
need for the shared buffers and the bytes with no reuse at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lbdl_graph.analysis import last_uses
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import Trait
from lbdl_graph.types import TensorType

from .base import PassResult
from .cost import Bindings, peak_memory, value_bytes

__all__ = ["MemoryReport", "arena_bytes", "memory_report", "plan_memory", "planned_peak"]

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


# ------------------------------------------------------------------------------ bytes of a plan


def arena_bytes(graph: Graph, bindings: Bindings | None = None) -> int:
    """Bytes of the shared buffers of :func:`plan_memory`'s plan (one per buffer id)."""
    plan = graph.metadata.get(KEY) or _plan(graph)
    size: dict[int, int] = {}
    for v in graph.iter_values():
        buf = plan["buffers"].get(v.name)
        if buf is not None:
            size[buf] = max(size.get(buf, 0), value_bytes(v, bindings))
    return sum(size.values())


def planned_peak(graph: Graph, bindings: Bindings | None = None, *,
                 in_place: Mapping[str, int] | None = None,
                 aliases: Callable[[Node], bool] | None = None) -> int:
    """Peak bytes of live buffers when nodes run in graph order and each value is released
    after its last read; a node's outputs are allocated while its inputs are held.

    ``in_place`` maps a node name to the input whose buffer its (single) output reuses (default:
    the plan's hints); nodes for which ``aliases`` is true (views) share their first input's
    buffer, which lives until its last holder dies. Graph inputs, parameters and views of them
    are not counted; graph outputs are never released.
    """
    return _simulate(graph, bindings, in_place, aliases)[0]


def _simulate(graph: Graph, bindings: Bindings | None, in_place: Mapping[str, int] | None,
              aliases: Callable[[Node], bool] | None) -> tuple[int, str]:
    """(peak bytes, name of the first node where the peak is reached) for planned_peak."""
    hints = _plan(graph)["in_place"] if in_place is None else in_place
    external = set(graph.inputs) | {p.value for p in graph.params}
    buf: dict[Value, int] = {v: -1 for v in external}  # -1: memory the run does not allocate
    refs: dict[int, int] = {}
    size: dict[int, int] = {}
    live = peak = 0
    where = ""
    for node, dead in zip(graph.nodes, last_uses(graph), strict=True):
        src = node.inputs[0] if node.inputs else None
        share = src is not None and aliases is not None and aliases(node)
        k = hints.get(node.name)
        for j, v in enumerate(node.outputs):
            held = src if share else node.inputs[k] if k is not None and j == 0 else None
            b = buf.get(held) if held is not None else None
            if b is None:  # a fresh buffer
                b = len(size)
                size[b] = value_bytes(v, bindings)
                live += size[b]
            buf[v] = b
            refs[b] = refs.get(b, 0) + 1
        if live > peak:
            peak, where = live, node.name
        for v in dead:
            b = buf.get(v, -1)
            if b >= 0:
                refs[b] -= 1
                if refs[b] == 0:
                    live -= size[b]
    return peak, where


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """Bytes of one run's intermediate values (inputs and parameters excluded).

    ``planned_peak``: with in-place writes and views (:func:`planned_peak`);
    ``planned_peak_no_inplace``: the same without in-place writes; ``liveness_peak``: every
    value its own buffer, freed after its last read (:func:`~.cost.peak_memory`); ``arena``:
    the shared buffers of an ahead-of-time plan (:func:`arena_bytes`); ``no_reuse``: every
    value its own buffer, none freed; ``inplace_nodes``: nodes planned to run in place;
    ``peak_node``: the node at which ``planned_peak`` is first reached.
    """

    planned_peak: int
    planned_peak_no_inplace: int
    liveness_peak: int
    arena: int
    no_reuse: int
    inplace_nodes: int
    peak_node: str

    def as_dict(self) -> dict[str, int | str]:
        """The figures by name (for JSON)."""
        return asdict(self)


def memory_report(graph: Graph, bindings: Bindings | None = None, *,
                  in_place: Mapping[str, int] | None = None,
                  aliases: Callable[[Node], bool] | None = None) -> MemoryReport:
    """The :class:`MemoryReport` of ``graph`` for ``bindings`` (arguments as for
    :func:`planned_peak`)."""
    hints = _plan(graph)["in_place"] if in_place is None else in_place
    peak, where = _simulate(graph, bindings, hints, aliases)
    return MemoryReport(
        planned_peak=peak,
        planned_peak_no_inplace=_simulate(graph, bindings, {}, aliases)[0],
        liveness_peak=peak_memory(graph, bindings),
        arena=arena_bytes(graph, bindings),
        no_reuse=sum(value_bytes(v, bindings) for n in graph.nodes for v in n.outputs),
        inplace_nodes=len(hints),
        peak_node=where,
    )
