"""The before/after picture of an optimisation, through the same collapse + ``dot`` pipeline.

Both graphs are collapsed to the same depth and drawn side by side in one DOT graph (frames
``cluster:before`` and ``cluster:after``, box ids prefixed ``before:`` / ``after:``). A box is
coloured by what happened to its nodes: removed or changed on the left; fused, added or changed
on the right. A single node lists the nodes it replaced and the rule that made it; a collapsed
scope counts its changes and names the rules that fired inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lbdl_graph.graph import Graph

from .collapse import MAX_BOXES, TARGET_BOXES, Box, ParamMode, Picture, collapse
from .common import Bindings, shorten
from .diff import GraphDiff, graph_diff
from .dot import COLORS, dot_document, dot_id, html_label, picture_dot
from .render import MAX_SIDE_PX, TIMEOUT_S, fit_depth, run_dot

__all__ = ["diff_dot", "diff_svg"]

_ORDER = ("fused", "added", "changed", "removed")  # the colour of a box with several changes


def _statuses(d: GraphDiff) -> tuple[dict[str, str], dict[str, str]]:
    before = {o: "removed" for o in d.removed}
    for o in d.changed.values():
        before.setdefault(o, "changed")
    after = {n: "changed" for n in d.changed}
    after.update(dict.fromkeys(d.added, "added"))
    after.update(dict.fromkeys(d.fused, "fused"))
    return before, after


def _count(box: Box, status: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in box.nodes:
        s = status.get(n.name)
        if s is not None:
            out[s] = out.get(s, 0) + 1
    return out


def _marks(pic: Picture, status: Mapping[str, str], d: GraphDiff, side: str
           ) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Classes, fills, note lines and tooltips of one side's boxes."""
    classes: dict[str, str] = {}
    fills: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    tips: dict[str, str] = {}
    gone = d.replaced_by() if side == "before" else {}
    for bid, box in pic.boxes.items():
        counts = _count(box, status)
        if not counts:
            continue
        top = next(s for s in _ORDER if s in counts)
        classes[bid], fills[bid] = top, COLORS[top]
        if box.kind == "node":
            name = box.nodes[0].name
            notes[bid] = _node_notes(name, top, d) if side == "after" else []
            if name in gone:
                rule = f" by rule {d.rules[name]}" if name in d.rules else ""
                tips[bid] = f"{name}: {top}{rule}; replaced by {', '.join(gone[name])}"
            continue
        notes[bid] = [", ".join(f"{counts[s]} {s}" for s in _ORDER if s in counts)]
        rules: dict[str, int] = {}
        for n in box.nodes:
            if n.name in d.rules and n.name in status:
                rules[d.rules[n.name]] = rules.get(d.rules[n.name], 0) + 1
        if rules:
            notes[bid].append(shorten("rules: " + ", ".join(
                f"{r} {c}" if c > 1 else r for r, c in rules.items()), 44))
    return classes, fills, notes, tips


def _node_notes(name: str, status: str, d: GraphDiff) -> list[str]:
    olds = d.replaced.get(name, ())
    lines: list[str] = []
    if olds:
        lines = [f"{'fuses' if status == 'fused' else 'replaces'} {len(olds)}:",
                 *(shorten(o, 40) for o in olds[:4])]
        if len(olds) > 4:
            lines.append(f"... +{len(olds) - 4} more")
    if name in d.rules:
        lines.append(f"rule: {d.rules[name]}")
    elif status == "changed":
        lines.append(f"was {d.before.node_map[d.changed[name]].op.name}")
    return lines


def diff_dot(
    before: Graph,
    after: Graph,
    *,
    rule_names: Mapping[str, str] | None = None,
    depth: int | None = None,
    expand: Iterable[str] = (),
    params: ParamMode = "inline",
    cluster: bool = True,
    bindings: Bindings | None = None,
    target: int = TARGET_BOXES,
    max_boxes: int = MAX_BOXES,
) -> str:
    """DOT text of ``before`` and ``after`` side by side, changes coloured (module doc)."""
    return _diff_dot(before, after, rule_names, depth, expand, params, cluster, bindings,
                     target, max_boxes)[0]


def _diff_dot(before: Graph, after: Graph, rule_names: Mapping[str, str] | None,
              depth: int | None, expand: Iterable[str], params: ParamMode, cluster: bool,
              bindings: Bindings | None, target: int, max_boxes: int) -> tuple[str, Picture]:
    """:func:`diff_dot` and the picture of the left side (its depth is that of both)."""
    d = graph_diff(before, after, rule_names)
    kw: dict[str, Any] = {"expand": tuple(expand), "params": params, "bindings": bindings,
                          "target": target, "max_boxes": max_boxes}
    left, right = collapse(before, depth=depth, **kw), collapse(after, depth=depth, **kw)
    if depth is None and left.depth != right.depth:  # the same depth on both sides
        common = min(left.depth, right.depth)
        left, right = collapse(before, depth=common, **kw), collapse(after, depth=common, **kw)
    sb, sa = _statuses(d)
    body: list[str] = []
    for side, pic, status, graph in (("before", left, sb, before), ("after", right, sa, after)):
        classes, fills, notes, tips = _marks(pic, status, d, side)
        body.append(f"  subgraph {dot_id('cluster_' + side)} {{")
        caption = f"{side}: {len(graph.nodes)} nodes"
        body.append(f"    label={html_label(caption)}; id={dot_id('cluster:' + side)}; "
                    'class="side"; style="rounded"; color="#cbd5e0";')
        body += picture_dot(pic, cluster=cluster, classes=classes, fills=fills, notes=notes,
                            tips=tips, prefix=f"{side}:", indent="    ")
        body.append("  }")
    c = d.counts
    label = (f"{before.name} -> {after.name}: {c['removed']} removed, {c['added']} added, "
             f"{c['fused']} fused, {c['changed']} changed (depth {left.depth} of "
             f"{max(left.max_depth, right.max_depth)})")
    return dot_document(f"{before.name} diff", body, label=label), left


def diff_svg(
    before: Graph,
    after: Graph,
    *,
    rule_names: Mapping[str, str] | None = None,
    depth: int | None = None,
    expand: Iterable[str] = (),
    params: ParamMode = "inline",
    cluster: bool = True,
    bindings: Bindings | None = None,
    target: int = TARGET_BOXES,
    max_boxes: int = MAX_BOXES,
    max_side_px: float = MAX_SIDE_PX,
    timeout: float = TIMEOUT_S,
    engine: str | None = None,
) -> str:
    """The picture of :func:`diff_dot` laid out by ``dot``; an automatic depth is lowered
    while the long side is over ``max_side_px``."""

    def draw(d: int | None) -> tuple[str, Picture]:
        text, left = _diff_dot(before, after, rule_names, d, tuple(expand), params, cluster,
                               bindings, target, max_boxes)
        return run_dot(text, timeout=timeout, engine=engine), left

    return fit_depth(draw, depth, max_side_px)[0]
