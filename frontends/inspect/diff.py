"""What an optimisation changed: node matching and a text listing (the picture is in
:mod:`.diff_picture`).

Nodes are matched by identity first (passes share the node objects they keep), then by name,
then structurally (a re-emitted node under a new name: same op and attributes on inputs that
correspond). A name match with another op or other attributes is *changed*; unmatched old nodes
are *removed*, unmatched new nodes *added*. For each new node, walking the old graph backwards
from the values it replaces (found by identity, by name, through the input slots of matched
consumers and by output position), through removed nodes, up to the values it reads, gives the
old nodes it *replaced*; a new node that replaced two or more is *fused*. Connected new nodes
with no share of their own (a decomposition) list what their group replaced. The rule that made
a node comes from an optional mapping node name -> rule name (removed nodes inherit the rule of
the node that replaced them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lbdl_graph.graph import Graph, Node, Value

from .common import fmt_types, shorten

__all__ = ["GraphDiff", "diff_text", "graph_diff"]


@dataclass(frozen=True)
class GraphDiff:
    """Node-level differences between two graphs (names of old and new nodes)."""

    before: Graph
    after: Graph
    kept: Mapping[str, str]  # new node name -> old node name, same op and attributes
    changed: Mapping[str, str]  # new node name -> old node name, another op or attributes
    removed: tuple[str, ...]  # old nodes with no counterpart
    added: tuple[str, ...]  # new nodes with no counterpart that fused nothing
    fused: tuple[str, ...]  # new nodes whose rewrite replaced more old nodes than it made
    replaced: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # new -> old nodes
    rules: Mapping[str, str] = field(default_factory=dict)  # node name -> rule name

    def status(self, name: str, *, side: str = "after") -> str:
        """'kept', 'changed', 'added', 'fused' (new side) or 'kept', 'changed', 'removed'."""
        if side == "before":
            if name in self.removed:
                return "removed"
            return "changed" if name in set(self.changed.values()) else "kept"
        for label, names in (("fused", self.fused), ("added", self.added),
                             ("changed", self.changed)):
            if name in names:
                return label
        return "kept"

    def replaced_by(self) -> dict[str, list[str]]:
        """Old node name -> the new nodes that replaced it."""
        out: dict[str, list[str]] = {}
        for new, olds in self.replaced.items():
            for o in olds:
                out.setdefault(o, []).append(new)
        return out

    @property
    def counts(self) -> dict[str, int]:
        """How many nodes are kept, changed, removed, added and fused."""
        return {"kept": len(self.kept), "changed": len(self.changed),
                "removed": len(self.removed), "added": len(self.added),
                "fused": len(self.fused)}


def _same_attrs(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (isinstance(va, np.ndarray) and isinstance(vb, np.ndarray)
                    and va.dtype == vb.dtype and np.array_equal(va, vb)):
                return False
        elif va != vb:
            return False
    return True


def graph_diff(before: Graph, after: Graph,
               rule_names: Mapping[str, str] | None = None) -> GraphDiff:
    """Match the nodes of ``before`` and ``after`` and explain the rewrite (see module doc)."""
    match, vmap = _match(before, after)
    changed = {n: o for n, o in match.items()
               if n is not o and (n.op is not o.op or not _same_attrs(n.attrs, o.attrs))}
    matched_old = set(match.values())
    removed = [o for o in before.nodes if o not in matched_old]

    rewritten = [n for n in after.nodes if n not in match or n in changed]
    replaceable = set(removed) | set(changed.values())
    old_order = {o: i for i, o in enumerate(before.nodes)}
    replaced: dict[str, tuple[str, ...]] = {}
    status: dict[Node, str] = {}
    for members in _components(after, rewritten):
        union: set[Node] = set()
        own: dict[Node, set[Node]] = {}
        for n in reversed(members):  # consumers first: they find their producers' images
            own[n] = _walk_back(before, n, vmap, replaceable)
            union |= own[n]
        for n in members:
            olds = own[n] or union
            if olds:
                replaced[n.name] = tuple(o.name for o in sorted(olds, key=old_order.__getitem__))
            if len(own[n]) >= 2:
                status[n] = "fused"
            elif n in changed:
                status[n] = "changed"
            else:
                status[n] = "added"
    new_of = {o: n for n, o in changed.items()}
    rules = dict(rule_names or {})
    inherited: dict[str, str] = {}
    for new, old_names in replaced.items():
        if new in rules:
            for old_name in old_names:
                inherited.setdefault(old_name, rules[new])
    for old_name, r in inherited.items():
        rules.setdefault(old_name, r)
    return GraphDiff(
        before=before,
        after=after,
        kept={n.name: o.name for n, o in match.items() if n not in changed},
        changed={n.name: o.name for n, o in changed.items() if status.get(n) == "changed"},
        removed=tuple(o.name for o in before.nodes
                      if o not in matched_old or status.get(new_of.get(o, o)) == "fused"),
        added=tuple(n.name for n in after.nodes if status.get(n) == "added"),
        fused=tuple(n.name for n in after.nodes if status.get(n) == "fused"),
        replaced=replaced,
        rules={k: v for k, v in rules.items()
               if k in after.node_map or k in before.node_map},
    )


def _match(before: Graph, after: Graph) -> tuple[dict[Node, Node], dict[Value, Value]]:
    """New node -> old node and new value -> old value.

    Nodes match by identity, then by name, then structurally: a new node whose inputs stand
    for an old node's inputs (same op and attributes) is that node re-emitted (forward), and
    the producers of corresponding values with the same op correspond too (backward, from the
    graph outputs by position). Values correspond by identity, by name, as outputs of matched
    nodes and through the input slots of matched nodes with the same op.
    """
    old_set = set(before.nodes)
    match: dict[Node, Node] = {n: n for n in after.nodes if n in old_set}
    old_by_name = {n.name: n for n in before.nodes if n not in set(match.values())}
    for n in after.nodes:
        if n not in match and n.name in old_by_name:
            match[n] = old_by_name.pop(n.name)
    matched_old = set(match.values())
    old_values = set(before.iter_values())
    vmap: dict[Value, Value] = {v: v for v in after.iter_values() if v in old_values}
    for v in after.iter_values():
        if v not in vmap and v.name in before.values:
            vmap[v] = before.values[v.name]
    if len(before.outputs) == len(after.outputs):
        for nv, ov in zip(after.outputs, before.outputs, strict=True):
            vmap.setdefault(nv, ov)

    def pair(n: Node, o: Node) -> None:
        match[n] = o
        matched_old.add(o)

    def same(n: Node, o: Node) -> bool:
        return (n.op is o.op and len(n.inputs) == len(o.inputs)
                and len(n.outputs) == len(o.outputs) and _same_attrs(n.attrs, o.attrs))

    def try_pair(nv: Value, ov: Value) -> None:
        pn, po = after.producer(nv), before.producer(ov)
        if (pn is not None and po is not None and pn not in match and po not in matched_old
                and same(pn, po) and pn.outputs.index(nv) == po.outputs.index(ov)):
            pair(pn, po)
            vmap.update(zip(pn.outputs, po.outputs, strict=True))

    by_inputs: dict[tuple[Any, ...], list[Node]] = {}
    for o in before.nodes:
        by_inputs.setdefault((o.op, *o.inputs), []).append(o)
    for _ in range(8):
        before_count = len(match)
        for n, o in list(match.items()):
            if len(n.outputs) == len(o.outputs):
                for nv, ov in zip(n.outputs, o.outputs, strict=True):
                    vmap.setdefault(nv, ov)
            if n is not o and same(n, o):
                for ni, oi in zip(n.inputs, o.inputs, strict=True):
                    if ni is not None and oi is not None:
                        vmap.setdefault(ni, oi)
        for n in after.nodes:  # forward: re-emitted nodes
            if n in match or any(v is not None and v not in vmap for v in n.inputs):
                continue
            key = (n.op, *(vmap[v] if v is not None else None for v in n.inputs))
            found = next((c for c in by_inputs.get(key, ()) if c not in matched_old
                          and same(n, c)), None)
            if found is not None:
                pair(n, found)
                vmap.update(zip(n.outputs, found.outputs, strict=True))
        for n in reversed(after.nodes):  # backward: producers of matched nodes' inputs
            old = match.get(n)
            if old is None or not same(n, old):
                continue
            for ni, oi in zip(n.inputs, old.inputs, strict=True):
                if ni is not None and oi is not None:
                    vmap.setdefault(ni, oi)
                    try_pair(ni, oi)
        for nv, ov in list(vmap.items()):  # graph outputs and values matched by name
            try_pair(nv, ov)
        if len(match) == before_count:
            break
    return match, vmap


def _walk_back(before: Graph, node: Node, vmap: dict[Value, Value],
               replaceable: set[Node]) -> set[Node]:
    """The replaceable old nodes between the old images of ``node``'s outputs and of its inputs.

    Breadth-first from the outputs; an old value of the same type as an input of ``node``
    and made by a replaceable node becomes the image of that input (the boundary to the
    rewritten node producing it), so chained rewrites each get their own share of old nodes.
    """
    stop = {vmap[v] for v in node.inputs if v is not None and v in vmap}
    open_inputs = [v for v in dict.fromkeys(node.inputs) if v is not None and v not in vmap]
    queue = [vmap[v] for v in node.outputs if v in vmap]
    starts = set(queue)
    seen: set[Node] = set()
    visited: set[Value] = set()
    while queue:
        nxt: list[Value] = []
        for ov in queue:
            if ov in stop or ov in visited:
                continue
            visited.add(ov)
            p = before.producer(ov)
            u = next((u for u in open_inputs if u.type == ov.type), None)
            if u is not None and p in replaceable and ov not in starts:
                vmap[u] = ov
                open_inputs.remove(u)
                continue
            if p is None or p in seen or p not in replaceable:
                continue
            seen.add(p)
            nxt.extend(v for v in p.inputs if v is not None)
        queue = nxt
    return seen


def _components(graph: Graph, nodes: list[Node]) -> list[list[Node]]:
    """Connected components (through values) of ``nodes`` within ``graph``, in graph order."""
    parent = {n: n for n in nodes}

    def find(n: Node) -> Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in nodes:
        for v in n.inputs:
            p = graph.producer(v) if v is not None else None
            if p is not None and p in parent:
                parent[find(p)] = find(n)
    groups: dict[Node, list[Node]] = {}
    for n in nodes:
        groups.setdefault(find(n), []).append(n)
    return list(groups.values())


def diff_text(before: Graph, after: Graph, *, rule_names: Mapping[str, str] | None = None,
              context: int | None = None) -> str:
    """A unified-diff-like listing: `` `` kept, ``-`` removed, ``+`` added or fused (with the
    nodes it replaced and the rule), ``~`` changed. ``context`` keeps only that many kept
    lines around each change."""
    d = graph_diff(before, after, rule_names)
    old_index = {n.name: i for i, n in enumerate(before.nodes)}
    removed = set(d.removed)
    gone = d.replaced_by()
    rows: list[tuple[str, Node, str]] = []
    done: set[str] = set()

    def flush(upto: int) -> None:
        for o in before.nodes[:upto]:
            if o.name in removed and o.name not in done:
                done.add(o.name)
                note = f"-> {', '.join(gone[o.name])}" if o.name in gone else ""
                rows.append(("-", o, note))

    for n in after.nodes:
        st = d.status(n.name)
        if st in ("kept", "changed"):
            old = d.kept.get(n.name) or d.changed[n.name]
            flush(old_index[old])
            note = ""
            o = before.node_map[old]
            if st == "changed":
                note = f"was {o.op.name}" + (f" ({o.name})" if o.name != n.name else "")
            elif o.name != n.name:
                note = f"(was {o.name})"
            rows.append(("~" if st == "changed" else " ", n, note))
            continue
        for old_name in d.replaced.get(n.name, ()):
            if old_name in removed:
                flush(old_index[old_name] + 1)
        note = f"<- {', '.join(d.replaced[n.name])}" if n.name in d.replaced else ""
        if st == "fused":
            note = "fuses " + note[3:]
        if n.name in d.rules:
            note += f"  [rule: {d.rules[n.name]}]"
        rows.append(("+", n, note.strip()))
    flush(len(before.nodes))

    wn = max((len(r[1].name) for r in rows), default=4)
    wo = max((len(r[1].op.name) for r in rows), default=2)
    wt = min(36, max((len(fmt_types(r[1].outputs)) for r in rows), default=4))
    lines = [f"{m} {n.name.ljust(wn)}  {n.op.name.ljust(wo)}  "
             f"{shorten(fmt_types(n.outputs), 36).ljust(wt)}  {note}".rstrip()
             for m, n, note in rows]
    if context is not None:
        lines = _with_context(lines, context)
    c = d.counts
    head = [f"--- before: {before.name} ({len(before.nodes)} nodes)",
            f"+++ after: {after.name} ({len(after.nodes)} nodes)",
            f"@@ {c['removed']} removed, {c['added']} added, {c['fused']} fused, "
            f"{c['changed']} changed, {c['kept']} kept @@"]
    return "\n".join(head + lines) + "\n"


def _with_context(lines: list[str], context: int) -> list[str]:
    changes = [i for i, s in enumerate(lines) if not s.startswith(" ")]
    keep = {j for i in changes for j in range(i - context, i + context + 1)}
    out: list[str] = []
    for i, s in enumerate(lines):
        if i in keep or not s.startswith(" "):
            out.append(s)
        elif not out or out[-1] != "  ...":
            out.append("  ...")
    return out
