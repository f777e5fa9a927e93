"""Graphs with collectives on ONNX Runtime: one session per segment, reductions between.

Stock ONNX Runtime has no collective op, so :func:`cut_at_collectives` cuts a graph at its
``all_reduce`` nodes: a node's *level* is the number of collectives on its longest input path,
segment k holds the other nodes of level k, and the collectives of level k run on the host
(through the reducer bound with :func:`lbdl_graph.backends.collectives.bind`) after segment k
and before segment k+1. :class:`SegmentedOrtRunner` runs that plan with the interface of
:class:`~.runner.OrtRunner` (``run(feeds) -> outputs``). Every process cuts the same graph the
same way, so all of them reach the collectives in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import Trait

from ..collectives import reduce
from .runner import OrtRunner

__all__ = ["Segment", "SegmentedOrtRunner", "cut_at_collectives", "has_collectives"]


def has_collectives(graph: Graph) -> bool:
    """Whether any node of ``graph`` is a collective."""
    return any(n.op.has(Trait.COLLECTIVE) for n in graph.nodes)


@dataclass(frozen=True)
class Segment:
    """A piece of the plan: a collective-free graph (None if empty), then the collectives."""

    graph: Graph | None
    collectives: tuple[Node, ...]


def cut_at_collectives(graph: Graph) -> list[Segment]:
    """The segments of ``graph`` in run order (see the module docstring)."""
    level: dict[Value, int] = {}
    parts: list[list[Node]] = [[]]
    colls: list[list[Node]] = [[]]
    for node in graph.nodes:
        k = max((level.get(v, 0) for v in node.inputs if v is not None), default=0)
        coll = node.op.has(Trait.COLLECTIVE)
        while len(parts) <= k + coll:
            parts.append([])
            colls.append([])
        (colls if coll else parts)[k].append(node)
        for v in node.outputs:
            level[v] = k + coll
    # who reads each value: the segment index of its readers, and the collectives
    readers: dict[Value, set[int]] = {}
    for k, (nodes, cs) in enumerate(zip(parts, colls, strict=True)):
        for n in nodes:
            for u in n.inputs:
                if u is not None:
                    readers.setdefault(u, set()).add(k)
        for n in cs:
            if n.inputs[0] is not None:
                readers.setdefault(n.inputs[0], set()).add(-1)  # read on the host
    params = {p.value: p for p in graph.params}
    wanted = set(graph.outputs)
    out: list[Segment] = []
    for k, (nodes, cs) in enumerate(zip(parts, colls, strict=True)):
        made = {v for n in nodes for v in n.outputs}
        ins: dict[Value, None] = {}
        used_params: dict[Value, None] = {}
        for n in nodes:
            for w in n.inputs:
                if w is None or w in made:
                    continue
                (used_params if w in params else ins)[w] = None
        outs = [v for n in nodes for v in n.outputs
                if v in wanted or readers.get(v, set()) - {k}]
        sub = None
        if nodes and outs:
            sub = Graph(f"{graph.name}_segment{k}", tuple(ins), tuple(outs), tuple(nodes),
                        tuple(params[v] for v in used_params))
        out.append(Segment(sub, tuple(cs)))
    return out


class SegmentedOrtRunner:
    """Runs a graph with collectives as ONNX Runtime sessions with host reductions between.

    ``options`` go to each segment's :class:`~.runner.OrtRunner`. Parameters of ``graph``
    stay initializers of the segments that read them.
    """

    def __init__(self, graph: Graph, **options: Any) -> None:
        self.graph = graph
        self.segments = cut_at_collectives(graph)
        self._runners = [OrtRunner(s.graph, **options) if s.graph is not None else None
                         for s in self.segments]
        self._inputs = [[v.name for v in s.graph.inputs] if s.graph is not None else []
                        for s in self.segments]
        self._params = {p.name: p.data for p in graph.params}

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run every segment in order; returns the graph's outputs by name."""
        env: dict[str, Any] = {**self._params, **feeds}
        for seg, runner, names in zip(self.segments, self._runners, self._inputs, strict=True):
            if runner is not None:
                env.update(runner.run({n: env[n] for n in names}))
            for node in seg.collectives:
                x = node.inputs[0]
                assert x is not None
                env[node.outputs[0].name] = reduce(np.asarray(env[x.name]),
                                                   str(node.attrs["group"]))
        return {v.name: np.asarray(env[v.name]) for v in self.graph.outputs}
