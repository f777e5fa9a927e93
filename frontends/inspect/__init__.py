"""Inspection and visualisation of graphs: summaries, DOT, SVG and before/after diffs.

* :func:`summary` - a Keras/torchinfo-style table per layer (module path) or node with output
  types, parameter counts, MACs and memory estimates;
* :func:`scope_tree` - the graph grouped by module path with per-scope totals;
* :func:`to_dot` - Graphviz DOT text with nested clusters by module path;
* :func:`to_svg` - an SVG picture from a builtin layered layout (or the ``dot`` binary);
* :func:`graph_diff`, :func:`diff_text`, :func:`diff_svg` - what an optimisation removed, added,
  fused and changed, with the rule responsible when the pass manager names it;
* :func:`explore` - every stage of a pipeline in Google's Model Explorer (a local server, or JSON
  files with ``out=``), with per-node overlays and the pass diff.
"""

from __future__ import annotations

from .diff import GraphDiff, diff_svg, diff_text, graph_diff
from .dot import to_dot
from .explorer import ExplorerError, ExplorerServer, explore
from .layout import Layout, count_crossings, layered_layout
from .scopes import ScopeError, ScopeTree, node_scope, scope_parts, scope_path, scope_tree
from .summary import MAC_RULES, Summary, SummaryRow, node_macs, register_macs, summary
from .svg import graph_layout, to_svg

__all__ = [
    "MAC_RULES",
    "ExplorerError",
    "ExplorerServer",
    "GraphDiff",
    "Layout",
    "ScopeError",
    "ScopeTree",
    "Summary",
    "SummaryRow",
    "count_crossings",
    "diff_svg",
    "diff_text",
    "explore",
    "graph_diff",
    "graph_layout",
    "layered_layout",
    "node_macs",
    "node_scope",
    "register_macs",
    "scope_parts",
    "scope_path",
    "scope_tree",
    "summary",
    "to_dot",
    "to_svg",
]
