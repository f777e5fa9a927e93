"""Scope trees: a graph at any stage grouped by module path, with per-scope totals.

A node's scope is the dotted module path it was traced in (``layers.0.attn``), kept through
the passes (``Node.scope``); backward nodes live under ``grad/`` and optimizer updates under
``optim/``. :func:`scope_parts` splits a scope into tree levels, keeping a container index with
its container (``layers.0.attn`` -> ``layers.0``, ``attn``), so a 12-block GPT opens as one
level of about 16 boxes. :func:`scope_tree` builds the tree; every :class:`ScopeTree` knows its
own nodes and the totals of its subtree: nodes, parameters, MACs and output bytes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field

from lbdl_graph.errors import LbdlError
from lbdl_graph.graph import Graph, Node, Param

from .common import Bindings, module_of, type_bytes
from .summary import node_macs

__all__ = [
    "ScopeError",
    "ScopeTree",
    "node_scope",
    "param_scope",
    "scope_parts",
    "scope_path",
    "scope_tree",
]


class ScopeError(LbdlError):
    """A scope asked for by name is not in the graph."""


def node_scope(node: Node) -> str:
    """The node's scope; for graphs made before scopes were kept, the prefix of its name."""
    return node.scope or module_of(node.name)


def scope_parts(scope: str) -> tuple[str, ...]:
    """Tree levels of a scope: split at ``/`` and ``.``; an index joins its container.

    ``grad/layers.0.attn`` -> ``("grad", "layers.0", "attn")``; ``"" -> ()``.
    """
    parts: list[str] = []
    for piece in scope.split("/"):
        for seg in piece.split("."):
            if not seg:
                continue
            if seg.isdigit() and parts:
                parts[-1] = f"{parts[-1]}.{seg}"
            else:
                parts.append(seg)
    return tuple(parts)


def scope_path(scope: str) -> str:
    """The scope as a ``/``-separated tree path (Model Explorer's namespace form)."""
    return "/".join(scope_parts(scope))


@dataclass
class ScopeTree:
    """One scope: its direct nodes, its children and the totals of its whole subtree."""

    path: tuple[str, ...] = ()
    children: dict[str, ScopeTree] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    total_nodes: int = 0
    total_params: int = 0
    total_macs: int = 0
    total_bytes: int = 0

    @property
    def name(self) -> str:
        """The last level's name ('' for the root)."""
        return self.path[-1] if self.path else ""

    @property
    def key(self) -> str:
        """The ``/``-joined path ('' for the root)."""
        return "/".join(self.path)

    def child(self, name: str) -> ScopeTree:
        """The named child, created on first use."""
        if name not in self.children:
            self.children[name] = ScopeTree((*self.path, name))
        return self.children[name]

    def walk(self) -> Iterator[ScopeTree]:
        """This scope and every scope below it, parents first."""
        yield self
        for c in self.children.values():
            yield from c.walk()

    def all_nodes(self) -> Iterator[Node]:
        """Every node of the subtree."""
        for t in self.walk():
            yield from t.nodes

    @property
    def depth(self) -> int:
        """Levels below this scope (0 for a leaf)."""
        return 1 + max((c.depth for c in self.children.values()), default=-1)

    def keys(self) -> list[str]:
        """Every scope key of the subtree (root excluded)."""
        return [t.key for t in self.walk() if t.path]

    def find(self, scope: str) -> ScopeTree:
        """The subtree of ``scope`` (dotted or ``/`` form); unknown: nearest named."""
        t = self
        for part in scope_parts(scope):
            if part not in t.children:
                near = difflib.get_close_matches(scope_path(scope), self.keys(), n=5, cutoff=0.4)
                hint = f"; nearest: {', '.join(near)}" if near else ""
                raise ScopeError(f"no scope '{scope}' in the graph{hint}")
            t = t.children[part]
        return t

    def op_counts(self) -> dict[str, int]:
        """Ops of the subtree, most frequent first."""
        counts: dict[str, int] = {}
        for n in self.all_nodes():
            counts[n.op.name] = counts.get(n.op.name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def format(self, max_depth: int | None = None) -> str:
        """An indented text tree with the totals of each scope."""
        lines = [f"{'scope':<44} {'nodes':>7} {'params':>12} {'MACs':>14} {'bytes':>12}"]
        for t in self.walk():
            if max_depth is not None and len(t.path) > max_depth:
                continue
            label = ("  " * max(0, len(t.path) - 1) + t.name) if t.path else "(graph)"
            lines.append(f"{label:<44} {t.total_nodes:>7,} {t.total_params:>12,} "
                         f"{t.total_macs:>14,} {t.total_bytes:>12,}")
        return "\n".join(lines)


def param_scope(param: Param, consumers: list[Node]) -> str:
    """Where a parameter belongs: the module prefix of its name when a consumer lives there,
    else the common scope of its consumers."""
    scopes = [node_scope(n) for n in consumers]
    prefix = param.name.rpartition(".")[0]
    while prefix:
        if any(s == prefix or s.startswith(prefix + ".") for s in scopes):
            return prefix
        prefix = prefix.rpartition(".")[0]
    if not scopes:
        return ""
    common = scope_parts(scopes[0])
    for s in scopes[1:]:
        p = scope_parts(s)
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return "/".join(common)


def scope_tree(graph: Graph, bindings: Bindings | None = None) -> ScopeTree:
    """The scope tree of ``graph`` with per-scope totals (symbolic dims from ``bindings``,
    unbound ones count as 1)."""
    root = ScopeTree()

    def at(scope: str) -> ScopeTree:
        t = root
        for part in scope_parts(scope):
            t = t.child(part)
        return t

    for node in graph.nodes:
        at(node_scope(node)).nodes.append(node)
    consumers = graph.consumers
    for p in graph.params:
        at(param_scope(p, list(consumers.get(p.value, ())))).params.append(p)
    _total(root, bindings)
    return root


def _total(t: ScopeTree, bindings: Bindings | None) -> None:
    """Fill the totals bottom-up."""
    t.total_nodes = len(t.nodes)
    t.total_params = sum(int(p.data.size) for p in t.params)
    t.total_macs = sum(node_macs(n, bindings) for n in t.nodes)
    t.total_bytes = sum(type_bytes(v.type, bindings) for n in t.nodes for v in n.outputs)
    for c in t.children.values():
        _total(c, bindings)
        t.total_nodes += c.total_nodes
        t.total_params += c.total_params
        t.total_macs += c.total_macs
        t.total_bytes += c.total_bytes
