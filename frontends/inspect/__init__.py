"""Inspection and visualisation of graphs: summaries, scope trees, pictures and diffs.

* :func:`summary` - a Keras/torchinfo-style table per layer (module path) or node with output
  types, parameter counts, MACs and memory estimates;
* :func:`scope_tree` - the graph grouped by module path with per-scope totals;
* :func:`collapse` - the graph collapsed by scope into at most about 60 boxes (or to a given
  depth, with scopes expanded or one scope in focus);
* :func:`to_dot` / :func:`to_svg` - that picture as Graphviz DOT text / laid out by ``dot``
  (a system Graphviz or the ``graphviz-pure`` wheel);
* :func:`graph_diff`, :func:`diff_text`, :func:`diff_svg` - what an optimisation removed, added,
  fused and changed, with the rule responsible when the pass manager names it;
* :func:`parse_svg` - box geometry of a picture (overlaps, size, font sizes) for checks.
* :func:`explore` - every stage of a pipeline in Google's Model Explorer (a local server, or JSON
  files with ``out=``), with per-node overlays and the pass diff.
"""

from __future__ import annotations

from .collapse import Box, Link, Picture, PictureError, collapse
from .diff import GraphDiff, diff_text, graph_diff
from .diff_picture import diff_dot, diff_svg
from .dot import to_dot
from .explorer import ExplorerError, ExplorerServer, explore
from .render import LayoutError, draw_svg, find_engine, run_dot, to_svg
from .scopes import ScopeError, ScopeTree, node_scope, scope_parts, scope_path, scope_tree
from .summary import MAC_RULES, Summary, SummaryRow, node_macs, register_macs, summary
from .svg_geometry import SvgGeometry, parse_svg

__all__ = [
    "MAC_RULES",
    "Box",
    "ExplorerError",
    "ExplorerServer",
    "GraphDiff",
    "LayoutError",
    "Link",
    "Picture",
    "PictureError",
    "ScopeError",
    "ScopeTree",
    "Summary",
    "SummaryRow",
    "SvgGeometry",
    "collapse",
    "diff_dot",
    "diff_svg",
    "diff_text",
    "draw_svg",
    "explore",
    "find_engine",
    "graph_diff",
    "node_macs",
    "node_scope",
    "parse_svg",
    "register_macs",
    "run_dot",
    "scope_parts",
    "scope_path",
    "scope_tree",
    "summary",
    "to_dot",
    "to_svg",
]
