"""Graphs collapsed by scope: the boxes and links of a bounded static picture.

:func:`collapse` turns a graph into a :class:`Picture`. The scopes of the tree (see
:mod:`.scopes`) down to the drawing depth are *open*: drawn as frames holding their own nodes,
one box each, and their children. A scope at the depth is *collapsed* into one box that shows
its name, node and parameter counts, its most frequent ops and the types of the values that
leave it. Links between boxes come from the dataflow between their nodes, one per pair of boxes.

``depth=None`` picks the deepest uniform depth whose picture has at most ``target`` boxes;
``expand`` opens named scopes; ``focus`` draws one scope alone (in full unless ``depth`` says
otherwise), the values entering and leaving it as small boundary boxes. A picture with more
than ``max_boxes`` boxes raises :class:`PictureError` with its size and a depth that fits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from lbdl_graph.errors import LbdlError
from lbdl_graph.graph import Graph, Node, Value

from .common import Bindings, fmt_count, fmt_types, shorten
from .scopes import ScopeError, ScopeTree, node_scope, scope_parts, scope_tree

__all__ = ["Box", "Link", "Picture", "PictureError", "collapse", "compact",
           "with_weight_nodes_at_home"]

ParamMode = Literal["inline", "boxes", "none"]
TARGET_BOXES = 60
MAX_BOXES = 400


class PictureError(LbdlError):
    """A static picture that cannot be drawn as asked (too many boxes, a bad depth)."""


@dataclass
class Box:
    """One box of the picture: a collapsed scope, an IR node, a graph input/output, a
    parameter or a boundary value of a focused scope."""

    id: str
    kind: Literal["scope", "node", "input", "output", "param", "boundary"]
    title: str
    lines: list[str]
    frame: tuple[str, ...] = ()  # the open scope whose frame holds it (() at top level)
    nodes: tuple[Node, ...] = ()
    tree: ScopeTree | None = None
    tip: str = ""
    leaving: list[Value] = field(default_factory=list)  # values read by other boxes


@dataclass
class Link:
    """Dataflow from one box to another: the values carried and an optional label."""

    src: str
    dst: str
    values: list[Value]
    label: str = ""


@dataclass
class Picture:
    """A graph collapsed by scope, ready for DOT emission."""

    name: str
    boxes: dict[str, Box]
    links: list[Link]
    frames: dict[tuple[str, ...], str]  # drawn frames of open scopes: path -> label
    depth: int
    max_depth: int
    focus: str
    nodes: int  # IR nodes inside the boxes
    box_of: dict[Node, str]

    @property
    def label(self) -> str:
        """A one-line caption: what is drawn and how to see more."""
        where = f" {self.focus}" if self.focus else ""
        return (f"{self.name}{where}: depth {self.depth} of {self.max_depth}, "
                f"{len(self.boxes)} boxes for {self.nodes} nodes")


def compact(n: int) -> str:
    """``2362368`` -> ``2.36M``; small counts as they are."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def collapse(
    graph: Graph,
    *,
    depth: int | None = None,
    expand: Iterable[str] = (),
    focus: str | None = None,
    params: ParamMode = "inline",
    bindings: Bindings | None = None,
    target: int = TARGET_BOXES,
    max_boxes: int = MAX_BOXES,
) -> Picture:
    """The picture of ``graph`` collapsed by scope (see the module doc)."""
    if params not in ("inline", "boxes", "none"):
        raise PictureError(f"params must be 'inline', 'boxes' or 'none', got {params!r}")
    original, graph = graph, with_weight_nodes_at_home(graph)
    root = scope_tree(graph, bindings)
    base = root.find(focus) if focus else root
    if focus and base.total_nodes == 0:
        raise ScopeError(f"scope '{focus}' has no nodes to draw")
    max_depth = base.depth + 1
    opened: set[tuple[str, ...]] = set()
    for scope in expand:
        t = root.find(scope)
        if t.path[: len(base.path)] != base.path:
            raise ScopeError(f"cannot expand '{scope}': it is outside the focus '{focus}'")
        opened.update(t.path[:k] for k in range(len(base.path), len(t.path) + 1))
    extra = _extra_boxes(graph, base)
    if depth is None:
        depth = _auto_depth(base, max_depth, opened, extra, target)
        if focus and _count(base, max_depth, opened) + extra <= max_boxes:
            depth = max_depth  # a focused scope is drawn in full when that fits the limit
    elif depth < 1:
        raise PictureError(f"depth must be at least 1, got {depth}")
    depth = min(depth, max_depth)
    total = _count(base, depth, opened) + extra
    if total > max_boxes:
        raise PictureError(_too_large(graph.name, base, depth, opened, extra, total, max_boxes))
    pic = _Builder(graph, root, base, depth, opened, params, bindings).build(max_depth, focus)
    if graph is not original:  # boxes hold the caller's node objects
        back = dict(zip(graph.nodes, original.nodes, strict=True))
        pic.box_of = {back[n]: b for n, b in pic.box_of.items()}
        for box in pic.boxes.values():
            box.nodes = tuple(back[n] for n in box.nodes)
    return pic


def with_weight_nodes_at_home(graph: Graph) -> Graph:
    """``graph`` with each node computed from weights alone (constants, a transposed or cast
    parameter, ...) moved into the deepest scope holding all its consumers, unless that scope
    is shallower than its own: an imported ``Identity(weight)`` at top level or a constant
    named ``const//encoder/...`` joins the layer reading it, a mask that every layer reads
    stays where it is. Other nodes are kept as they are (the same objects)."""
    weight = set()
    for n in graph.nodes:
        if all(v is None or graph.param_of(v) is not None or graph.producer(v) in weight
               for v in n.inputs):
            weight.add(n)
    if not weight:
        return graph
    outputs = set(graph.outputs)
    home: dict[Node, tuple[str, ...]] = {}
    for n in reversed(graph.nodes):
        if n not in weight or any(v in outputs for v in n.outputs):
            continue
        users = [c for v in n.outputs for c in graph.consumers.get(v, ())]
        if not users:
            continue
        paths = [home.get(c) or scope_parts(node_scope(c)) for c in users]
        common = paths[0]
        for p in paths[1:]:
            k = 0
            while k < min(len(common), len(p)) and common[k] == p[k]:
                k += 1
            common = common[:k]
        own = scope_parts(node_scope(n))
        if common != own and len(common) >= max(1, len(own)):
            home[n] = common
    if not home:
        return graph
    return graph.replace(nodes=[replace(n, scope="/".join(home[n])) if n in home else n
                                for n in graph.nodes])


def _is_open(t: ScopeTree, base: ScopeTree, depth: int, opened: set[tuple[str, ...]]) -> bool:
    return len(t.path) - len(base.path) < depth or t.path in opened


def _count(t: ScopeTree, depth: int, opened: set[tuple[str, ...]]) -> int:
    """Boxes of the nodes and scopes of open scope ``t`` (the base) at ``depth``."""

    def walk(s: ScopeTree) -> int:
        n = len(s.nodes)
        for c in s.children.values():
            n += walk(c) if _is_open(c, t, depth, opened) else 1
        return n

    return walk(t)


def _auto_depth(base: ScopeTree, max_depth: int, opened: set[tuple[str, ...]], extra: int,
                target: int) -> int:
    """The deepest depth whose picture has at most ``target`` boxes (at least 1)."""
    chosen = 1
    for d in range(2, max_depth + 1):
        if _count(base, d, opened) + extra > target:
            break
        chosen = d
    return chosen


def _extra_boxes(graph: Graph, base: ScopeTree) -> int:
    """Input, output and boundary boxes (the same at every depth)."""
    inside = set(base.all_nodes())
    outs = {v for n in inside for v in n.outputs
            if any(c not in inside for c in graph.consumers.get(v, ()))}
    outs |= set(graph.outputs) if not base.path else {v for v in graph.outputs
                                                       if graph.producer(v) in inside}
    ins = {v for n in inside for v in n.inputs
           if v is not None and graph.producer(v) not in inside and graph.param_of(v) is None}
    if not base.path:
        ins |= set(graph.inputs)
    return len(ins) + len(outs)


def _too_large(name: str, base: ScopeTree, depth: int, opened: set[tuple[str, ...]],
               extra: int, total: int, limit: int) -> str:
    fits = [d for d in range(1, depth) if _count(base, d, opened) + extra <= limit]
    where = f" of scope '{base.key}'" if base.path else ""
    msg = (f"the picture of '{name}'{where} at depth {depth} would have {total} boxes "
           f"(limit {limit})")
    if fits:
        d = fits[-1]
        msg += f"; at depth {d} (--depth {d}) it has {_count(base, d, opened) + extra}"
    elif opened:
        msg += "; expand fewer scopes"
    return msg + ("; raise the limit (--max-boxes) or browse every node with "
                  "`lbdl-graph explore`")


class _Builder:
    """Assigns nodes to boxes and collects the links (one instance per picture)."""

    def __init__(self, graph: Graph, root: ScopeTree, base: ScopeTree, depth: int,
                 opened: set[tuple[str, ...]], params: ParamMode,
                 bindings: Bindings | None) -> None:
        self.graph, self.root, self.base = graph, root, base
        self.depth, self.opened, self.params = depth, opened, params
        self.bindings = bindings
        self.boxes: dict[str, Box] = {}
        self.box_of: dict[Node, str] = {}
        self.frames: dict[tuple[str, ...], str] = {}
        self.links: dict[tuple[str, str], Link] = {}

    def build(self, max_depth: int, focus: str | None) -> Picture:
        g = self.graph
        if not self.base.path:
            for v in g.inputs:
                self._add(Box(f"input:{v.name}", "input", shorten(v.name, 32), [str(v.type)],
                              tip=f"graph input {v.name}: {v.type}"))
        else:
            self.frames[self.base.path] = self.base.key
        self._visit(self.base, self.base.path if self.base.path else ())
        inside = self.box_of
        for n in list(inside):
            for v in dict.fromkeys(x for x in n.inputs if x is not None):
                self._link(self._source(v, inside[n]), inside[n], v)
        outputs = {v: i for i, v in enumerate(g.outputs)}
        for n in list(inside):
            for v in n.outputs:
                if any(c not in inside for c in g.consumers.get(v, ())) and v not in outputs:
                    bid = f"out:{v.name}"
                    self._add(Box(bid, "boundary", shorten(v.name, 32), [str(v.type)],
                                  tip=f"{v.name}: {v.type}, read outside"))
                    self._link(inside[n], bid, v)
        for v, i in outputs.items():
            p = g.producer(v)
            if self.base.path and p not in inside:
                continue
            bid = f"output:{i}:{v.name}"
            self._add(Box(bid, "output", shorten(v.name, 32), [str(v.type)],
                          tip=f"graph output {v.name}: {v.type}"))
            self._link(self._source(v, bid), bid, v)
        self._finish_labels()
        return Picture(g.name, self.boxes, list(self.links.values()), self.frames, self.depth,
                       max_depth, self.base.key if focus else "", len(inside), self.box_of)

    def _add(self, box: Box) -> Box:
        return self.boxes.setdefault(box.id, box)

    def _visit(self, t: ScopeTree, frame: tuple[str, ...]) -> None:
        """Boxes of open scope ``t`` drawn in ``frame`` (chains of single children share one)."""
        if t.path and t.path != frame and (t.nodes or len(t.children) != 1):
            self.frames[t.path] = "/".join(t.path[len(frame):])
            frame = t.path
        for n in t.nodes:
            self._node_box(n, frame)
        for c in t.children.values():
            if _is_open(c, self.base, self.depth, self.opened):
                self._visit(c, frame)
            else:
                box = self._add(Box(f"scope:{c.key}", "scope", "/".join(c.path[len(frame):]),
                                    [], frame, tuple(c.all_nodes()), c))
                self.box_of.update(dict.fromkeys(box.nodes, box.id))

    def _node_box(self, n: Node, frame: tuple[str, ...]) -> None:
        lines = [shorten(fmt_types(n.outputs), 44)]
        if self.params == "inline":
            prefix = node_scope(n) + "."
            for v in dict.fromkeys(v for v in n.inputs if v is not None):
                if self.graph.param_of(v) is not None:
                    name = v.name[len(prefix):] if v.name.startswith(prefix) else v.name
                    lines.append(shorten(f"{name} {v.type}", 44))
        attrs = ", ".join(f"{k}={v!r}" for k, v in n.attrs.items() if not hasattr(v, "shape"))
        tip = (f"{n.name}\n{n.op.name}({fmt_types(n.inputs)}) -> {fmt_types(n.outputs)}"
               + (f"\n[{shorten(attrs, 200)}]" if attrs else "")
               + (f"\n{n.source}" if n.source is not None else "")
               + (f"\nmade by {n.origin}" if n.origin else ""))
        self._add(Box(f"node:{n.name}", "node", n.op.name, lines, frame, (n,), tip=tip))
        self.box_of[n] = f"node:{n.name}"

    def _source(self, v: Value, dst: str) -> str:
        """The box a value comes from (created on demand for parameters and boundaries)."""
        g = self.graph
        p = g.producer(v)
        if p is not None and p in self.box_of:
            return self.box_of[p]
        param = g.param_of(v)
        if param is not None:
            frame = self.boxes[dst].frame
            kind = self.boxes[dst].kind
            if kind == "scope" or (kind == "node" and self.params != "boxes"):
                return dst  # inside the box (counted, listed inline or left out)
            return self._add(Box(f"param:{param.name}", "param", shorten(param.name, 32),
                                 [str(v.type)], frame,
                                 tip=f"parameter {param.name}: {v.type}")).id
        if p is None and not self.base.path:
            return f"input:{v.name}"
        src = (f"{p.name} ({node_scope(p) or 'top level'})" if p is not None
               else f"graph input {v.name}")
        return self._add(Box(f"in:{v.name}", "boundary", shorten(v.name, 32), [str(v.type)],
                             tip=f"{v.name}: {v.type}, from {src}")).id

    def _link(self, src: str, dst: str, v: Value) -> None:
        if src == dst:
            return
        link = self.links.setdefault((src, dst), Link(src, dst, []))
        if v not in link.values:
            link.values.append(v)
        if v not in self.boxes[src].leaving:
            self.boxes[src].leaving.append(v)

    def _finish_labels(self) -> None:
        """Scope-box text (needs the leaving values) and link labels where types differ."""
        for box in self.boxes.values():
            if box.kind == "scope" and box.tree is not None:
                box.lines, box.tip = scope_lines(box.tree, box.leaving, self.bindings)
        for link in self.links.values():
            src = self.boxes[link.src]
            if src.kind in ("scope", "node") and len({str(v.type) for v in src.leaving}) > 1:
                link.label = shorten(", ".join(dict.fromkeys(str(v.type) for v in link.values)),
                                     32)


def scope_lines(t: ScopeTree, leaving: list[Value], bindings: Bindings | None = None
                ) -> tuple[list[str], str]:
    """Text lines of a collapsed scope's box and its tooltip."""
    counts = t.op_counts()
    head = f"{t.total_nodes} node{'s' if t.total_nodes != 1 else ''}"
    if t.total_params:
        head += f", {compact(t.total_params)} params"
    ops = [f"{op} {c}" if c > 1 else op for op, c in list(counts.items())[:3]]
    more = f", +{len(counts) - 3}" if len(counts) > 3 else ""
    lines = [head, shorten(", ".join(ops), 40) + more]
    types = list(dict.fromkeys(str(v.type) for v in leaving))
    if types:
        rest = f" +{len(types) - 2}" if len(types) > 2 else ""
        lines.append(shorten("out " + ", ".join(types[:2]), 44) + rest)
    tip = "\n".join([
        t.key,
        f"{fmt_count(t.total_nodes)} nodes, {fmt_count(t.total_params)} parameters, "
        f"{fmt_count(t.total_macs)} MACs, {fmt_count(t.total_bytes)} output bytes"
        + (f" at {dict(bindings)}" if bindings else ""),
        ", ".join(f"{op} {c}" for op, c in counts.items()),
    ])
    return lines, tip
