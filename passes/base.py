"""The pass contract: a pass is a pure function ``Graph -> PassResult``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lbdl_graph.graph import Graph

__all__ = ["Pass", "PassResult"]


@dataclass(frozen=True, slots=True)
class PassResult:
    """The new graph, whether anything changed, and counts keyed by rule or step name."""

    graph: Graph
    changed: bool
    stats: Mapping[str, int] = field(default_factory=dict)


Pass = Callable[[Graph], PassResult]
