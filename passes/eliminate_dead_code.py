"""Dead-code elimination: drop nodes and parameters that no graph output depends on.

Graph inputs always stay (they are the graph's signature). Every op is pure, random ones
included (their bits are a function of the key input), so an unused node can always go.
"""

from __future__ import annotations

from lbdl_graph.analysis import reachable_nodes
from lbdl_graph.graph import Graph

from .base import PassResult

__all__ = ["eliminate_dead_code"]


def eliminate_dead_code(graph: Graph) -> PassResult:
    """Remove unreachable nodes and unused parameters; stats count each.

    Returns the same graph with ``changed=False`` when there is nothing to remove.
    """
    nodes = reachable_nodes(graph)
    used = {v for n in nodes for v in n.inputs if v is not None} | set(graph.outputs)
    params = [p for p in graph.params if p.value in used]
    dead_nodes = len(graph.nodes) - len(nodes)
    dead_params = len(graph.params) - len(params)
    if not dead_nodes and not dead_params:
        return PassResult(graph, False, {})
    stats = {k: n for k, n in (("dead_nodes", dead_nodes), ("dead_params", dead_params)) if n}
    return PassResult(graph.replace(nodes=nodes, params=params), True, stats)
