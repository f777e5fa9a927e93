"""Graphviz DOT text of pictures collapsed by scope (:mod:`.collapse`); no dependency.

Every box becomes one DOT node whose ``id`` is the box id (``scope:layers.0/attn``,
``node:NAME``, ``input:x``, ``output:0:y``, ``param:w``, ``in:V``/``out:V`` for the boundary of
a focused scope) and whose ``class`` is its kind (``op`` for an IR node), so the SVG that
``dot`` writes keeps both (as ``class="node scope"``, ...);
frames of open scopes are ``subgraph cluster_...`` blocks with ``id="cluster:PATH"``. Labels
are HTML-like: a bold title, then plain lines, all at least 9 pt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape

from lbdl_graph.graph import Graph

from .collapse import MAX_BOXES, TARGET_BOXES, ParamMode, Picture, collapse
from .common import Bindings

__all__ = ["COLORS", "dot_document", "dot_id", "html_label", "picture_dot", "to_dot"]

FONT = "Helvetica"  # graphviz-pure and Graphviz have its metrics; SVG falls back to sans
FONT_SIZE = 10  # box text, in points (1 pt = 4/3 px at 100 %)
SMALL = 9  # edge labels, notes and boundary boxes: the smallest text in a picture
COLORS = {
    "node": "#ffffff",
    "scope": "#e3ecf7",
    "input": "#d6eaff",
    "output": "#ffe8c2",
    "param": "#eeeeee",
    "boundary": "#f7fafc",
    "highlight": "#ffd27f",
    "removed": "#fed7d7",
    "added": "#c6f6d5",
    "fused": "#e9d8fd",
    "changed": "#fefcbf",
}
_FRAME = 'style="rounded,filled"; color="#9aa5b1"; fillcolor="#4a6fa512";'
_KIND_ATTRS = {
    "node": 'shape=box, style="rounded,filled", color="#4a5568"',
    "scope": 'shape=box, style="rounded,filled", color="#2c5282", penwidth=1.6',
    "input": 'shape=box, style="rounded,filled", color="#2b6cb0"',
    "output": 'shape=box, style="rounded,filled", color="#c05621", penwidth=1.6',
    "param": 'shape=note, style=filled, color="#a0aec0"',
    "boundary": 'shape=box, style="rounded,dashed,filled", color="#718096"',
}


def dot_id(text: str) -> str:
    """A double-quoted DOT identifier (backslashes and quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(s: str) -> str:
    """Escaped label text; the ellipsis spelled in ASCII, whose widths every dot knows."""
    return escape(s.replace("\u2026", "..."))


def html_label(title: str, lines: Sequence[str] = (), notes: Sequence[str] = (), *,
               bold: bool = True, size: int = FONT_SIZE) -> str:
    """An HTML-like DOT label: ``title`` (bold), ``lines`` and smaller grey ``notes``."""
    head = f"<b>{_text(title)}</b>" if bold else _text(title)
    rows = [head, *(_text(s) for s in lines)]
    rows += [f'<font point-size="{SMALL}" color="#4a5568">{_text(s)}</font>' for s in notes]
    body = "<br/>".join(rows)
    return f'<<font point-size="{size}">{body}</font>>'


def picture_dot(
    pic: Picture,
    *,
    cluster: bool = True,
    classes: Mapping[str, str] | None = None,
    fills: Mapping[str, str] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    tips: Mapping[str, str] | None = None,
    prefix: str = "",
    indent: str = "  ",
) -> list[str]:
    """DOT statements of one picture: boxes (inside their frames with ``cluster``) and links.

    ``classes``/``fills``/``notes``/``tips`` are keyed by box id and add a CSS class, a fill
    colour, extra lines and a tooltip to that box; ``prefix`` goes before every id so that two
    pictures can share one DOT graph.
    """
    classes, fills, notes, tips = classes or {}, fills or {}, notes or {}, tips or {}
    decl: dict[str, str] = {}
    for bid, box in pic.boxes.items():
        kind = "op" if box.kind == "node" else box.kind  # dot itself writes class "node"
        cls = " ".join(c for c in (kind, classes.get(bid, "")) if c)
        small = box.kind == "boundary"
        label = html_label(box.title, box.lines, notes.get(bid, ()), bold=not small,
                           size=SMALL if small else FONT_SIZE)
        fill = fills.get(bid, COLORS[box.kind])
        tip = tips.get(bid, box.tip)
        decl[bid] = (f"{dot_id(prefix + bid)} [label={label}, {_KIND_ATTRS[box.kind]}, "
                     f'fillcolor="{fill}", id={dot_id(prefix + bid)}, class={dot_id(cls)}'
                     + (f", tooltip={dot_id(tip)}" if tip else "") + "];")
    lines: list[str] = []
    frames = pic.frames if cluster else {}
    by_frame: dict[tuple[str, ...], list[str]] = {}
    for bid, box in pic.boxes.items():
        f = box.frame
        while f and f not in frames:
            f = f[:-1]
        by_frame.setdefault(f, []).append(bid)
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for path in frames:
        parent = path[:-1]
        while parent and parent not in frames:
            parent = parent[:-1]
        children.setdefault(parent, []).append(path)

    def emit(path: tuple[str, ...], ind: str) -> None:
        for bid in by_frame.get(path, ()):
            lines.append(ind + decl[bid])
        for sub in children.get(path, ()):
            key = "/".join(sub)
            lines.append(f"{ind}subgraph {dot_id('cluster_' + prefix + key)} {{")
            lines.append(f"{ind}  label={html_label(frames[sub], bold=False)}; "
                         f"id={dot_id('cluster:' + prefix + key)}; class=\"frame\"; "
                         f"tooltip={dot_id(key)}; {_FRAME}")
            emit(sub, ind + "  ")
            lines.append(f"{ind}}}")

    emit((), indent)
    for link in pic.links:
        attrs = f" [label={dot_id(link.label.replace(chr(0x2026), '...'))}]" if link.label else ""
        lines.append(f"{indent}{dot_id(prefix + link.src)} -> {dot_id(prefix + link.dst)}{attrs};")
    return lines


def dot_document(name: str, body: Iterable[str], *, label: str = "", rankdir: str = "TB"
                 ) -> str:
    """A complete ``digraph`` with the house style around DOT statements ``body``."""
    lines = [f"digraph {dot_id(name)} {{",
             f'  graph [rankdir={rankdir}, fontname="{FONT}", fontsize=12, labelloc=t, '
             "labeljust=l, nodesep=0.2, ranksep=0.25, pad=0.15, outputorder=edgesfirst, "
             'bgcolor="#ffffff"'
             + (f", label={dot_id(label)}" if label else "") + "];",
             f'  node [fontname="{FONT}", fontsize={FONT_SIZE}, margin="0.1,0.04", '
             "height=0.3];",
             f'  edge [fontname="{FONT}", fontsize={SMALL}, color="#718096", '
             'fontcolor="#4a5568", arrowsize=0.6];',
             *body, "}"]
    return "\n".join(lines) + "\n"


def to_dot(
    graph: Graph,
    *,
    depth: int | None = None,
    expand: Iterable[str] = (),
    focus: str | None = None,
    params: ParamMode = "inline",
    cluster: bool = True,
    highlight: Mapping[str, str] | Iterable[str] | None = None,
    bindings: Bindings | None = None,
    target: int = TARGET_BOXES,
    max_boxes: int = MAX_BOXES,
    rankdir: str = "TB",
) -> str:
    """DOT text of ``graph`` collapsed by scope (arguments as :func:`.collapse.collapse`).

    ``highlight`` names nodes whose boxes are filled orange (a mapping gives each a colour);
    a collapsed box takes the colour of the first highlighted node inside it.
    """
    pic = collapse(graph, depth=depth, expand=expand, focus=focus, params=params,
                   bindings=bindings, target=target, max_boxes=max_boxes)
    classes, fills = highlight_boxes(pic, highlight)
    body = picture_dot(pic, cluster=cluster, classes=classes, fills=fills)
    return dot_document(graph.name, body, label=pic.label, rankdir=rankdir)


def highlight_boxes(pic: Picture, highlight: Mapping[str, str] | Iterable[str] | None
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """Box classes and fills for highlighted node names."""
    if highlight is None:
        return {}, {}
    colors = (dict(highlight) if isinstance(highlight, Mapping)
              else dict.fromkeys(highlight, COLORS["highlight"]))
    by_name = {n.name: bid for n, bid in pic.box_of.items()}
    classes: dict[str, str] = {}
    fills: dict[str, str] = {}
    for name, color in colors.items():
        bid = by_name.get(name)
        if bid is not None and bid not in classes:
            classes[bid] = "highlight"
            fills[bid] = color
    return classes, fills
