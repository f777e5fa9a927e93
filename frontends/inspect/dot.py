"""Graphviz DOT text for a graph, with nested clusters by module path (no dependency)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lbdl_graph.graph import Graph, Value

from .common import fmt_types, module_of, module_prefixes, param_module, shorten

__all__ = ["ClusterTree", "cluster_tree", "dot_id", "to_dot"]

COLORS = {
    "input": "#d6eaff",
    "param": "#eeeeee",
    "output": "#ffe8c2",
    "node": "#ffffff",
    "highlight": "#ffd27f",
}


def dot_id(text: str) -> str:
    """A double-quoted DOT identifier (backslashes and quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    body = "\\n".join(s.replace("\\", "\\\\").replace('"', '\\"') for s in lines)
    return f'"{body}"'


@dataclass
class ClusterTree:
    """A module-path cluster: its path, direct members (element ids) and child clusters."""

    path: str
    members: list[str] = field(default_factory=list)
    children: dict[str, ClusterTree] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The path shown for the cluster (the full dotted path)."""
        return self.path


def cluster_tree(graph: Graph, *, params: bool = True) -> ClusterTree:
    """Clusters by module path: node ids (``node:NAME``) and parameter ids (``param:NAME``)
    placed in their module; chains of clusters with one child and no members are merged."""
    root = ClusterTree("")
    modules = {module_of(n.name) for n in graph.nodes} - {""}
    known: set[str] = set()
    for m in modules:
        known.update(module_prefixes(m))

    def at(path: str) -> ClusterTree:
        node = root
        for prefix in module_prefixes(path):
            node = node.children.setdefault(prefix, ClusterTree(prefix))
        return node

    if params:
        for p in graph.params:
            mod = param_module(p.name, frozenset(known))
            (at(mod) if mod else root).members.append(f"param:{p.name}")
    for n in graph.nodes:
        mod = module_of(n.name)
        (at(mod) if mod else root).members.append(f"node:{n.name}")
    _collapse(root)
    return root


def _collapse(tree: ClusterTree) -> None:
    for key, child in list(tree.children.items()):
        while not child.members and len(child.children) == 1:
            child = next(iter(child.children.values()))
        tree.children[key] = child
        _collapse(child)


def element_ids(graph: Graph, params: bool = True) -> dict[Value, str]:
    """The id of each value's producer: ``input:x``, ``param:w`` or ``node:NAME``."""
    out: dict[Value, str] = {v: f"input:{v.name}" for v in graph.inputs}
    if params:
        out.update({p.value: f"param:{p.name}" for p in graph.params})
    out.update({v: f"node:{n.name}" for n in graph.nodes for v in n.outputs})
    return out


def to_dot(
    graph: Graph,
    *,
    cluster: bool = True,
    params: bool = True,
    highlight: Mapping[str, str] | set[str] | list[str] | None = None,
    rankdir: str = "TB",
    svg_ids: bool = True,
) -> str:
    """Graphviz DOT text: one box per node (op + output type), edges labelled with types.

    Inputs are blue ellipses, parameters grey notes, outputs orange double octagons; with
    ``cluster`` nodes sit in nested ``subgraph cluster_...`` blocks by module path.
    ``highlight`` names nodes to fill orange (a mapping gives each its own colour). With
    ``svg_ids`` every element carries ``id``/``class`` attributes that Graphviz copies into SVG.
    """
    colors = _highlight_colors(highlight)
    lines = [f"digraph {dot_id(graph.name)} {{",
             f"  rankdir={rankdir};",
             '  graph [fontname="Helvetica", fontsize=11, labeljust=l, style=rounded, '
             'color="#9aa5b1"];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
             f'fillcolor="{COLORS["node"]}"];',
             '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']
    decl: dict[str, str] = {}

    def attrs(eid: str, kind: str, extra: str) -> str:
        ids = f", id={dot_id(eid)}, class={dot_id(kind)}" if svg_ids else ""
        return f"{dot_id(eid)} [{extra}{ids}];"

    for v in graph.inputs:
        eid = f"input:{v.name}"
        decl[eid] = attrs(eid, "input", f"label={_label(v.name, str(v.type))}, shape=ellipse, "
                                        f'fillcolor="{COLORS["input"]}"')
    if params:
        for p in graph.params:
            eid = f"param:{p.name}"
            kind = "param" if p.trainable else "param buffer"
            decl[eid] = attrs(eid, kind, f"label={_label(p.name, str(p.value.type))}, "
                                         f'shape=note, fillcolor="{COLORS["param"]}"')
    for n in graph.nodes:
        eid = f"node:{n.name}"
        fill = colors.get(n.name, COLORS["node"])
        tip = f"{n.name}: {n.op.name}" + (f" @ {n.source}" if n.source is not None else "")
        label = _label(n.op.name, shorten(fmt_types(n.outputs), 48))
        decl[eid] = attrs(eid, "node", f'label={label}, fillcolor="{fill}", '
                                       f"tooltip={dot_id(tip)}")
    for i, v in enumerate(graph.outputs):
        eid = f"output:{i}:{v.name}"
        decl[eid] = attrs(eid, "output", f"label={_label(v.name, str(v.type))}, "
                                         f'shape=doubleoctagon, fillcolor="{COLORS["output"]}"')

    placed: set[str] = set()
    if cluster:
        tree = cluster_tree(graph, params=params)
        for child in tree.children.values():
            _emit_cluster(child, decl, lines, placed, "  ")
    lines += [f"  {d}" for eid, d in decl.items() if eid not in placed]

    ids = element_ids(graph, params)
    for n in graph.nodes:
        seen: set[Value] = set()
        for u in n.inputs:
            if u is None or u in seen or u not in ids:
                continue
            seen.add(u)
            lines.append(f"  {dot_id(ids[u])} -> {dot_id('node:' + n.name)} "
                         f"[label={_label(str(u.type))}];")
    for i, v in enumerate(graph.outputs):
        if v in ids:
            lines.append(f"  {dot_id(ids[v])} -> {dot_id(f'output:{i}:{v.name}')} "
                         f"[label={_label(str(v.type))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _emit_cluster(tree: ClusterTree, decl: Mapping[str, str], lines: list[str],
                  placed: set[str], indent: str) -> None:
    lines.append(f"{indent}subgraph {dot_id('cluster_' + tree.path)} {{")
    lines.append(f"{indent}  label={_label(tree.label)}; id={dot_id('cluster:' + tree.path)};")
    for eid in tree.members:
        lines.append(f"{indent}  {decl[eid]}")
        placed.add(eid)
    for child in tree.children.values():
        _emit_cluster(child, decl, lines, placed, indent + "  ")
    lines.append(f"{indent}}}")


def _highlight_colors(
    highlight: Mapping[str, str] | set[str] | list[str] | None,
) -> dict[str, str]:
    if highlight is None:
        return {}
    if isinstance(highlight, Mapping):
        return dict(highlight)
    return dict.fromkeys(highlight, COLORS["highlight"])
