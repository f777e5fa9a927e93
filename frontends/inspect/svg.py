"""SVG pictures of graphs with no system dependency (own layered layout), or via Graphviz.

Every IR node is one ``<g class="node" id="node:NAME">`` box showing op and output type;
inputs, parameters and outputs are ``<g class="input|param|output">``; clusters by module path
are ``<g class="cluster" id="cluster:PATH">`` rectangles drawn behind; a legend sits below.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from lbdl_graph.graph import Graph, Node

from .common import fmt_types, module_of, shorten
from .dot import ClusterTree, cluster_tree, element_ids, to_dot
from .layout import Layout, layered_layout

__all__ = ["graph_layout", "render_graph", "svg_document", "to_svg"]

CHAR_W = 6.6  # width of one character of the 11px monospace font
LINE_H = 14.0
BOX_STYLE = {
    "node": "fill:#ffffff;stroke:#4a5568;stroke-width:1",
    "input": "fill:#d6eaff;stroke:#2b6cb0;stroke-width:1",
    "param": "fill:#eeeeee;stroke:#a0aec0;stroke-width:1;stroke-dasharray:3 2",
    "output": "fill:#ffe8c2;stroke:#c05621;stroke-width:2",
    "cluster": "fill:#4a6fa5;fill-opacity:0.06;stroke:#9aa5b1;stroke-dasharray:4 3",
    "highlight": "fill:#ffd27f;stroke:#b7791f;stroke-width:2",
    "removed": "fill:#fed7d7;stroke:#c53030;stroke-width:2",
    "added": "fill:#c6f6d5;stroke:#2f855a;stroke-width:2",
    "fused": "fill:#e9d8fd;stroke:#6b46c1;stroke-width:2",
    "changed": "fill:#fefcbf;stroke:#b7791f;stroke-width:2",
}
# legend swatches use class "key-<name>" so that only IR nodes carry class "node"
STYLE = "\n".join([
    "text{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:11px;"
    "fill:#1a202c}",
    "text.op{font-weight:bold}",
    "text.note{font-size:10px;fill:#4a5568}",
    "text.title{font-size:14px;font-weight:bold}",
    ".cluster text{font-size:10px;fill:#4a5568}",
    ".edge{fill:none;stroke:#718096;stroke-width:1.1}",
    *(f".{c} rect,.key-{c} rect{{{rule}}}" for c, rule in BOX_STYLE.items()),
])
LEGEND = [("input", "graph input"), ("param", "parameter"), ("node", "op: name / output type"),
          ("output", "graph output"), ("cluster", "module (cluster)")]


def _groups(tree: ClusterTree) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}

    def walk(t: ClusterTree, path: tuple[str, ...]) -> None:
        here = (*path, t.path) if t.path else path
        for m in t.members:
            out[m] = here
        for c in t.children.values():
            walk(c, here)

    walk(tree, ())
    return out


ParamMode = Literal["inline", "boxes", "none"]


def _param_mode(params: ParamMode | bool) -> str:
    modes: dict[object, str] = {True: "boxes", False: "none"}
    mode = modes.get(params, params)
    if mode not in ("inline", "boxes", "none"):
        raise ValueError(f"params must be 'inline', 'boxes' or 'none', got {params!r}")
    return str(mode)


def graph_layout(
    graph: Graph,
    *,
    cluster: bool = True,
    params: ParamMode | bool = "inline",
    notes: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Layout, dict[str, list[str]]]:
    """Lay out ``graph``; returns the layout and the text lines of every element (by id).

    ``params="inline"`` lists the parameters a node reads inside its box (as Netron does),
    ``"boxes"`` draws them as boxes of their own, ``"none"`` leaves them out.
    """
    mode = _param_mode(params)
    texts: dict[str, list[str]] = {}
    for v in graph.inputs:
        texts[f"input:{v.name}"] = [shorten(v.name, 32), str(v.type)]
    if mode == "boxes":
        for p in graph.params:
            texts[f"param:{p.name}"] = [shorten(p.name, 32), str(p.value.type)]
    for n in graph.nodes:
        lines = [shorten(n.op.name, 32), shorten(fmt_types(n.outputs), 40)]
        if mode == "inline":
            scope = module_of(n.name) + "."
            for v in dict.fromkeys(v for v in n.inputs if v is not None):
                if graph.param_of(v) is not None:
                    label = v.name[len(scope):] if v.name.startswith(scope) else v.name
                    lines.append(shorten(f"{label} {v.type}", 40))
        texts[f"node:{n.name}"] = lines
    for i, v in enumerate(graph.outputs):
        texts[f"output:{i}:{v.name}"] = [shorten(v.name, 32), str(v.type)]
    for eid, extra in (notes or {}).items():
        if eid in texts:
            texts[eid] = texts[eid] + [shorten(s, 44) for s in extra]
    sizes = {eid: (max(64.0, CHAR_W * max(len(s) for s in lines) + 16), 10 + LINE_H * len(lines))
             for eid, lines in texts.items()}
    ids = element_ids(graph, mode == "boxes")
    edges = [(ids[v], f"node:{n.name}") for n in graph.nodes for v in n.inputs
             if v is not None and v in ids]
    edges += [(ids[v], f"output:{i}:{v.name}") for i, v in enumerate(graph.outputs) if v in ids]
    groups = _groups(cluster_tree(graph, params=mode == "boxes")) if cluster else {}
    return layered_layout(list(texts), edges, sizes, groups), texts


def render_graph(
    graph: Graph,
    *,
    cluster: bool = True,
    params: ParamMode | bool = "inline",
    classes: Mapping[str, str] | None = None,
    fills: Mapping[str, str] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    tips: Mapping[str, str] | None = None,
    id_prefix: str = "",
    dx: float = 0.0,
    dy: float = 0.0,
) -> tuple[list[str], float, float]:
    """SVG elements for ``graph`` translated by (dx, dy); returns lines, width and height.

    ``classes``/``fills``/``notes``/``tips`` are keyed by element id (``node:NAME``) and add a
    CSS class, a fill colour, extra text lines and tooltip text to that box.
    """
    layout, texts = graph_layout(graph, cluster=cluster, params=params, notes=notes)
    classes, fills, tips = classes or {}, fills or {}, tips or {}
    nodes = {f"node:{n.name}": n for n in graph.nodes}
    out = [f'<g class="graph" transform="translate({dx:.1f},{dy:.1f})">', '<g class="clusters">']
    for path, (x, y, w, h) in layout.clusters.items():
        out.append(f'<g class="cluster" id={quoteattr(id_prefix + "cluster:" + path)}>'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6"/>'
                   f'<text x="{x + 5:.1f}" y="{y + 11:.1f}">{escape(shorten(path, 60))}</text>'
                   "</g>")
    out += ["</g>", '<g class="edges">']
    out += _edge_paths(layout)
    out += ["</g>", '<g class="nodes">']
    for eid, box in layout.boxes.items():
        kind = eid.split(":", 1)[0]
        cls = " ".join(c for c in (kind, classes.get(eid, "")) if c)
        node = nodes.get(eid)
        tip = tips.get(eid) or _tooltip(eid, node, texts[eid])
        rx = 12 if kind in ("input", "output") else 4
        style = f" style={quoteattr('fill:' + fills[eid])}" if eid in fills else ""
        out.append(f'<g class={quoteattr(cls)} id={quoteattr(id_prefix + eid)}'
                   + (f" data-op={quoteattr(node.op.name)}" if node is not None else "") + ">"
                   f"<title>{escape(tip)}</title>"
                   f'<rect x="{box.left:.1f}" y="{box.top:.1f}" width="{box.w:.1f}" '
                   f'height="{box.h:.1f}" rx="{rx}"{style}/>')
        for k, line in enumerate(texts[eid]):
            tcls = ("op" if kind == "node" else "name") if k == 0 else ("type" if k == 1
                                                                         else "note")
            ty = box.top + 5 + LINE_H * (k + 1) - 3
            out.append(f'<text class="{tcls}" x="{box.x:.1f}" y="{ty:.1f}" '
                       f'text-anchor="middle">{escape(line)}</text>')
        out.append("</g>")
    out += ["</g>", "</g>"]
    return out, layout.width, layout.height


def _tooltip(eid: str, node: Node | None, lines: Sequence[str]) -> str:
    """Hover text: a node's name, signature, attributes and source line; else id and type."""
    if node is None:
        return f"{eid}\n{lines[1]}" if len(lines) > 1 else eid
    attrs = ", ".join(f"{k}={v!r}" for k, v in node.attrs.items() if not hasattr(v, "shape"))
    src = f"\n{node.source}" if node.source is not None else ""
    return (f"{node.name}\n{node.op.name}({fmt_types(node.inputs)}) -> "
            f"{fmt_types(node.outputs)}" + (f"\n[{shorten(attrs, 200)}]" if attrs else "") + src)


def _edge_paths(layout: Layout) -> list[str]:
    """Cubic Bezier paths with vertical tangents through dummy points; ports spread out."""
    boxes = layout.boxes
    outs: dict[str, list[int]] = {}
    ins: dict[str, list[int]] = {}
    for k, (u, v, _) in enumerate(layout.edges):
        outs.setdefault(u, []).append(k)
        ins.setdefault(v, []).append(k)

    def first(k: int) -> float:
        _, v, pts = layout.edges[k]
        return pts[0][0] if pts else boxes[v].x

    def last(k: int) -> float:
        u, _, pts = layout.edges[k]
        return pts[-1][0] if pts else boxes[u].x

    start: dict[int, float] = {}
    end: dict[int, float] = {}
    for vid, ks in outs.items():
        _spread(boxes[vid].x, boxes[vid].w, sorted(ks, key=first), start)
    for vid, ks in ins.items():
        _spread(boxes[vid].x, boxes[vid].w, sorted(ks, key=last), end)
    lines = []
    for k, (u, v, pts) in enumerate(layout.edges):
        chain = [(start[k], boxes[u].bottom), *pts, (end[k], boxes[v].top - 4)]
        d = [f"M{chain[0][0]:.1f},{chain[0][1]:.1f}"]
        for (x0, y0), (x1, y1) in pairwise(chain):
            m = (y1 - y0) / 2
            d.append(f"C{x0:.1f},{y0 + m:.1f} {x1:.1f},{y1 - m:.1f} {x1:.1f},{y1:.1f}")
        lines.append(f'<path class="edge" d="{" ".join(d)}" marker-end="url(#arrow)">'
                     f"<title>{escape(u)} -> {escape(v)}</title></path>")
    return lines


def _spread(x: float, w: float, ks: list[int], into: dict[int, float]) -> None:
    m = len(ks)
    step = min(12.0, 0.7 * w / max(1, m))
    for i, k in enumerate(ks):
        into[k] = x + (i - (m - 1) / 2) * step


def svg_document(body: list[str], width: float, height: float, *, title: str = "",
                 legend: Sequence[tuple[str, str]] = LEGEND) -> str:
    """Wrap rendered elements into a complete SVG document with style, arrow marker, legend."""
    top = 28.0 if title else 0.0
    leg_h = 26.0
    total_w = max(width, 40 + sum(39 + CHAR_W * len(label) for _, label in legend))
    total_h = height + top + leg_h + 10
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" '
            f'height="{total_h:.0f}" viewBox="0 0 {total_w:.0f} {total_h:.0f}">',
            f"<style>{STYLE}</style>",
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            'fill="#718096"/></marker></defs>',
            f'<rect width="{total_w:.0f}" height="{total_h:.0f}" fill="#ffffff"/>']
    if title:
        head.append(f'<text class="title" x="20" y="20">{escape(title)}</text>')
    head.append(f'<g transform="translate(0,{top:.0f})">')
    y = height + top + 4
    leg = ['<g class="legend">']
    x = 20.0
    for cls, label in legend:
        leg.append(f'<g class="key key-{cls}"><rect x="{x:.0f}" y="{y:.0f}" width="16" height="12" '
                   f'rx="3"/><text x="{x + 21:.0f}" y="{y + 10:.0f}">{escape(label)}</text></g>')
        x += 21 + CHAR_W * len(label) + 18
    leg.append("</g>")
    return "\n".join([*head, *body, "</g>", *leg, "</svg>"]) + "\n"


def to_svg(
    graph: Graph,
    *,
    cluster: bool = True,
    highlight: Iterable[str] | Mapping[str, str] | None = None,
    params: ParamMode | bool = "inline",
    engine: Literal["auto", "builtin", "graphviz"] = "builtin",
    title: str | None = None,
) -> str:
    """An SVG picture of ``graph``: one box per node (op + output type), clusters by module.

    ``highlight`` names nodes to mark (a mapping gives each a fill colour). ``engine="builtin"``
    uses the pure-Python layered layout; ``"graphviz"`` runs the system ``dot`` binary and
    ``"auto"`` uses it when installed; both fall back to the builtin layout without it.
    """
    if engine not in ("auto", "builtin", "graphviz"):
        raise ValueError(f"to_svg: engine must be auto, builtin or graphviz, got {engine!r}")
    if engine != "builtin":
        svg = _graphviz_svg(graph, cluster=cluster, params=_param_mode(params) == "boxes",
                            highlight=highlight,
                            warn=engine == "graphviz")
        if svg is not None:
            return svg
    hl = highlight if isinstance(highlight, Mapping) else dict.fromkeys(highlight or (), "")
    classes = {f"node:{k}": "highlight" for k in hl}
    fills = {f"node:{k}": c for k, c in hl.items() if c}
    body, w, h = render_graph(graph, cluster=cluster, params=params, classes=classes, fills=fills)
    legend = [(c, "parameter (in box)" if c == "param" and _param_mode(params) == "inline"
               else label) for c, label in LEGEND if c != "param" or params != "none"]
    legend += [("highlight", "highlighted")] if hl else []
    return svg_document(body, w, h, title=title if title is not None else graph.name,
                        legend=legend)


_KIND = re.compile(r"^(input|param|output):")


def _graphviz_svg(graph: Graph, *, cluster: bool, params: bool,
                  highlight: Iterable[str] | Mapping[str, str] | None, warn: bool) -> str | None:
    """SVG from the system ``dot`` binary with classes normalised, or None if unavailable."""
    exe = shutil.which("dot")
    reason = "the Graphviz `dot` binary is not installed"
    if exe is not None:
        hl = highlight if isinstance(highlight, Mapping) or highlight is None else list(highlight)
        text = to_dot(graph, cluster=cluster, params=params, highlight=hl, svg_ids=True)
        try:
            res = subprocess.run([exe, "-Tsvg"], input=text.encode(), capture_output=True,
                                 timeout=120, check=False)
            if res.returncode == 0:
                return _normalise_graphviz(res.stdout.decode())
            reason = f"dot failed: {res.stderr.decode(errors='replace').strip()[:200]}"
        except (OSError, subprocess.TimeoutExpired, ET.ParseError) as e:
            reason = f"dot failed: {e}"
    if warn:
        warnings.warn(f"to_svg: {reason}; using the builtin layout", RuntimeWarning,
                      stacklevel=3)
    return None


def _normalise_graphviz(svg: str) -> str:
    """Give Graphviz's element groups our classes: only IR nodes keep class "node"."""
    ET.register_namespace("", "http://www.w3.org/2000/svg")
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    root = ET.fromstring(svg)
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        m = _KIND.match(g.get("id", ""))
        if m is not None:
            rest = [c for c in g.get("class", "").split() if c not in ("node", m.group(1))]
            g.set("class", " ".join([m.group(1), *rest]))
    return ET.tostring(root, encoding="unicode") + "\n"
