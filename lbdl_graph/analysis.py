"""Graph analyses: networkx view, topological order, reachability, liveness."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from .errors import GraphError
from .graph import Graph, Node, Value

__all__ = [
    "find_cycle",
    "last_uses",
    "live_sets",
    "prune_unused",
    "reachable_nodes",
    "to_networkx",
    "toposort",
]


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """A networkx view: one graph node per IR node (keyed by name), one edge per value use.

    Graph inputs and parameters appear as nodes with ``kind`` 'input' / 'param'; edges carry the
    value name. Use it for toposort, reachability and dominators.
    """
    g = nx.MultiDiGraph(name=graph.name)
    producer: dict[Value, str] = {}
    for v in graph.inputs:
        g.add_node(f"input:{v.name}", kind="input", value=v.name)
        producer[v] = f"input:{v.name}"
    for p in graph.params:
        g.add_node(f"param:{p.name}", kind="param", value=p.name)
        producer[p.value] = f"param:{p.name}"
    for n in graph.nodes:
        g.add_node(n.name, kind="node", op=n.op.name)
        for v in n.outputs:
            producer[v] = n.name
    for n in graph.nodes:
        for u in n.inputs:
            if u is not None and u in producer:
                g.add_edge(producer[u], n.name, value=u.name)
    return g


def find_cycle(nodes: Sequence[Node]) -> list[str] | None:
    """Names of nodes forming a cycle through value dependencies, or None."""
    producer = {v: n.name for n in nodes for v in n.outputs}
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.name)
        for v in n.inputs:
            if v is not None and v in producer:
                g.add_edge(producer[v], n.name)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [u for u, _ in cycle]


def toposort(nodes: Iterable[Node]) -> list[Node]:
    """Nodes in a topological order that keeps the given order where it can (stable)."""
    nodes = list(nodes)
    order = {n: i for i, n in enumerate(nodes)}
    producer = {v: n for n in nodes for v in n.outputs}
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for n in nodes:
        for v in n.inputs:
            if v is not None and v in producer:
                g.add_edge(producer[v], n)
    try:
        return list(nx.lexicographical_topological_sort(g, key=order.__getitem__))
    except nx.NetworkXUnfeasible:
        cycle = find_cycle(nodes) or []
        raise GraphError("graph has a cycle: " + " -> ".join(cycle)) from None


def reachable_nodes(graph: Graph, outputs: Iterable[Value] | None = None) -> list[Node]:
    """Nodes that the given values (default: the graph outputs) depend on, in graph order."""
    needed: set[Value] = {v for v in (graph.outputs if outputs is None else outputs)}
    keep: set[Node] = set()
    for n in reversed(graph.nodes):
        if any(v in needed for v in n.outputs):
            keep.add(n)
            needed.update(v for v in n.inputs if v is not None)
    return [n for n in graph.nodes if n in keep]


def prune_unused(graph: Graph) -> Graph:
    """Drop nodes and parameters the outputs do not need (graph inputs are kept)."""
    nodes = reachable_nodes(graph)
    used = {v for n in nodes for v in n.inputs} | set(graph.outputs)
    params = [p for p in graph.params if p.value in used]
    if len(nodes) == len(graph.nodes) and len(params) == len(graph.params):
        return graph
    return graph.replace(nodes=nodes, params=params)


def last_uses(graph: Graph) -> list[list[Value]]:
    """For each node index, the values whose last reader it is (free after that node).

    Graph outputs are never freed; inputs and parameters are included (the caller decides).
    """
    last: dict[Value, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v is not None:
                last[v] = i
        for v in n.outputs:
            last.setdefault(v, i)  # unused outputs die where they are made
    outputs = set(graph.outputs)
    frees: list[list[Value]] = [[] for _ in graph.nodes]
    for v, i in last.items():
        if v not in outputs:
            frees[i].append(v)
    return frees


def live_sets(graph: Graph) -> list[set[Value]]:
    """The node outputs alive right after each node runs (for peak-memory estimates)."""
    frees = last_uses(graph)
    live: set[Value] = set()
    out: list[set[Value]] = []
    for n, dead in zip(graph.nodes, frees, strict=True):
        live.update(n.outputs)
        out.append(set(live))
        live.difference_update(dead)
    return out
