"""Graph plumbing shared by the quantisation passes: finding weights, rewriting nodes.

A *weight use* is a node of a quantisable kind reading a float parameter as its weight:
``matmul(x, W)`` / ``linear(x, W, b)`` with W (K, N) (layout "kn"), the same with
``transpose(W)`` of a (N, K) parameter in between (layout "nk", what ``F.linear`` traces to),
and ``conv`` / ``fused_conv`` with an (M, C/g, *kernel) weight (layout "conv").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import GraphError, OpError
from lbdl_graph.graph import Graph, Node, Param, Value
from lbdl_graph.opdef import OpDef
from lbdl_graph.types import tensor_type

__all__ = ["KINDS", "Rewriter", "WeightUse", "dead_transposes", "only_weights", "select_uses",
           "untie_weights", "weight_uses"]

KINDS: dict[str, tuple[OpDef, ...]] = {
    "matmul": (ops.matmul,),
    "linear": (ops.linear,),
    "conv": (ops.conv, ops.fused_conv),
}
_FLOAT_WEIGHTS = ("float32", "float16")


@dataclass(frozen=True)
class WeightUse:
    """A node reading parameter ``param`` as its weight (see the module docstring)."""

    node: Node
    param: Param
    layout: str  # "kn", "nk" or "conv"
    via: Node | None = None  # the transpose between the parameter and the node ("nk")

    @property
    def kind(self) -> str:
        """"matmul", "linear" or "conv"."""
        return next(k for k, o in KINDS.items() if self.node.op in o)

    def matrix_nk(self) -> np.ndarray:
        """The weight as an (N, K) matrix: one row per output feature."""
        return self.param.data if self.layout == "nk" else self.param.data.T


def _weight_param(graph: Graph, v: Value | None) -> tuple[Param, Node | None, str] | None:
    if v is None or v.ndim != 2:
        return None
    p = graph.param_of(v)
    if p is not None:
        return (p, None, "kn") if p.data.dtype.name in _FLOAT_WEIGHTS else None
    t = graph.producer(v)
    if t is None or t.op is not ops.transpose or t.attrs["perm"] not in (None, (1, 0)):
        return None
    src = t.inputs[0]
    p = graph.param_of(src) if src is not None else None
    if p is None or p.data.dtype.name not in _FLOAT_WEIGHTS:
        return None
    return p, t, "nk"


def weight_uses(graph: Graph) -> list[WeightUse]:
    """Every weight use of the graph, in node order."""
    out: list[WeightUse] = []
    for n in graph.nodes:
        if n.op in (ops.matmul, ops.linear):
            found = _weight_param(graph, n.inputs[1])
            if found is not None and n.inputs[0] is not None \
                    and graph.param_of(n.inputs[0]) is None:
                out.append(WeightUse(n, found[0], found[2], found[1]))
        elif n.op in KINDS["conv"]:
            p = graph.param_of(n.inputs[1]) if n.inputs[1] is not None else None
            if p is not None and p.data.dtype.name in _FLOAT_WEIGHTS:
                out.append(WeightUse(n, p, "conv"))
    return out


def select_uses(graph: Graph, kinds: Sequence[str], nodes: Sequence[str] | None,
                allowed: Sequence[str], scheme: str) -> list[WeightUse]:
    """The weight uses a pass should rewrite: of the given ``kinds``, restricted to ``nodes``
    (names) if given. A kind the scheme cannot handle raises OpError naming the first node."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise OpError(f"unknown op kind(s) {unknown}; use {sorted(KINDS)}")
    uses = weight_uses(graph)
    if nodes is not None:
        missing = sorted(set(nodes) - set(graph.node_map))
        if missing:
            raise GraphError(f"no node(s) {missing} in graph '{graph.name}'")
        named = {u.node.name for u in uses}
        for name in nodes:
            if name not in named:
                n = graph.node_map[name]
                raise OpError(f"node '{name}' ({n.op.name}) has no float weight parameter to "
                              f"quantise with scheme {scheme!r}", node=name, op=n.op.name,
                              source=n.source)
        uses = [u for u in uses if u.node.name in set(nodes)]
    else:
        uses = [u for u in uses if u.kind in kinds]
    for u in uses:
        if u.kind not in allowed:
            raise OpError(f"scheme {scheme!r} does not apply to {u.node.op.name} weights "
                          f"('{u.param.name}' {u.param.value.type}); it quantises "
                          f"{' / '.join(allowed)} weights", node=u.node.name, op=u.node.op.name,
                          source=u.node.source)
    return uses


def only_weights(graph: Graph, uses: Sequence[WeightUse]) -> list[WeightUse]:
    """The uses whose parameter is read only as a weight by these uses (directly or through
    their transposes), so that quantising it leaves no float copy behind."""
    nodes = {u.node for u in uses}

    def ok(v: Value) -> bool:
        if v in graph.outputs:
            return False
        for c in graph.consumers.get(v, ()):
            if c in nodes:
                continue
            if c.op is not ops.transpose or not all(ok(o) for o in c.outputs):
                return False
        return True

    good = {p for p in {u.param for u in uses} if ok(p.value)}
    return [u for u in uses if u.param in good]


def untie_weights(graph: Graph, uses: Sequence[WeightUse]) -> Graph:
    """A graph where each parameter that ``uses`` read as a weight but other nodes read too
    (a tied embedding: ``gather`` and the vocabulary head's ``matmul``) is copied: the weight
    uses (through their transposes) read ``<name>.untied`` and the other nodes the original,
    so quantising the copy leaves the other readers in float."""
    tied = {u.param for u in uses} - {u.param for u in only_weights(graph, uses)}
    if not tied:
        return graph
    readers = {u.via if u.via is not None else u.node for u in uses if u.param in tied}
    rw = Rewriter(graph)
    copies = {p.value: rw.param(f"{p.name}.untied", p.data) for p in tied}
    for node in graph.nodes:
        rw.keep(node, copies if node in readers else None)
    return rw.build()


def dead_transposes(graph: Graph, uses: Sequence[WeightUse]) -> set[Node]:
    """The transposes between parameters and rewritten nodes that nothing else reads."""
    nodes = {u.node for u in uses}
    return {u.via for u in uses if u.via is not None
            and all(c in nodes for c in graph.consumers.get(u.via.outputs[0], ()))
            and u.via.outputs[0] not in graph.outputs}


T = TypeVar("T")


class Rewriter:
    """Re-emits a graph node by node: kept nodes read substituted inputs, replaced nodes get
    new nodes whose last one writes the original output value (names and types stay). New
    nodes take the replaced node's scope and ``origin`` ("<pass>:<what>")."""

    def __init__(self, graph: Graph, origin: str = "quant") -> None:
        self.graph = graph
        self.origin = origin
        self.b = GraphBuilder.from_graph(graph, copy_nodes=False)
        self.subst: dict[Value, Value] = {}
        self.node: Node | None = None  # the node being replaced (for names and source)

    def current(self, v: Value | None) -> Value | None:
        """What ``v`` stands for now: its substitute, or itself (None stays None)."""
        return None if v is None else self.subst.get(v, v)

    def visit(self, targets: Mapping[Node, T], drop: Collection[Node] = ()
              ) -> Iterator[tuple[Node, T]]:
        """Walk the graph in order: keep every node that is neither a target nor in ``drop``
        and yield each target (with :attr:`node` set) for the caller to replace."""
        for node in self.graph.nodes:
            if node in targets:
                self.node = node
                yield node, targets[node]
            elif node not in drop:
                self.keep(node)

    def param(self, name: str, data: np.ndarray) -> Value:
        """A new frozen parameter (a buffer), named ``name`` or ``name_1``, ..."""
        arr = np.array(data, order="C")  # a copy (0-d stays 0-d)
        v = Value(self.b.unique_name(name), tensor_type(dtype(arr.dtype), arr.shape))
        self.b.params.append(Param(v, arr, trainable=False))
        return v

    def emit(self, op: OpDef, *inputs: Value | None, name: str, prefix: str | None = None,
             **attrs: Any) -> Value:
        """Add a helper node named ``<prefix>/<name>`` (default prefix: the replaced node's
        name) with the replaced node's source."""
        n = self.node
        prefix = prefix or (n.name if n is not None else "quant")
        with self.b:
            (out,) = self.b.add_node(op, list(inputs), attrs, name=f"{prefix}/{name}",
                                     source=n.source if n is not None else None,
                                     scope=n.scope if n is not None else "", origin=self.origin)
        return out

    def emit_as(self, op: OpDef, *inputs: Value | None, out: Value, **attrs: Any) -> None:
        """The final node of a replacement: computes exactly ``out`` (same value and name)."""
        n = self.node
        assert n is not None
        checked = op.check_attrs(attrs)
        (t,) = op.infer_types([v.type if v is not None else None for v in inputs], checked)
        if t != out.type:
            raise GraphError(f"rewriting '{n.name}' would change its type from {out.type} to "
                             f"{t}", node=n.name, op=n.op.name, source=n.source)
        origin = n.origin if op is n.op else self.origin  # same op, new inputs: still n
        self.b.emit(Node(op, tuple(inputs), (out,), checked, n.name, n.source, n.scope, origin))

    def emit_linear(self, op: OpDef, *inputs: Value | None, bias: Value | None,
                    activation: str, **attrs: Any) -> None:
        """``activation(op(*inputs) + bias)`` computing the replaced ``linear`` node's output;
        without bias and activation ``op`` itself writes it."""
        n = self.node
        assert n is not None
        steps: list[tuple[OpDef, dict[str, Any]]] = []
        if bias is not None:
            steps.append((ops.add, {}))
        if activation != "none":
            steps.append((ops.relu, {}) if activation == "relu" else (
                ops.gelu, {"approximate": "tanh" if activation == "gelu_tanh" else "none"}))
        if not steps:
            self.emit_as(op, *inputs, out=n.outputs[0], **attrs)
            return
        y = self.emit(op, *inputs, name=op.name, **attrs)
        for i, (step, step_attrs) in enumerate(steps):
            args = (y, self.current(bias)) if step is ops.add else (y,)
            if i == len(steps) - 1:
                self.emit_as(step, *args, out=n.outputs[0], **step_attrs)
            else:
                y = self.emit(step, *args, name=step.name, **step_attrs)

    def keep(self, node: Node, inputs: Mapping[Value, Value] | None = None) -> None:
        """Re-emit ``node``, reading substituted values (and ``inputs`` overrides)."""
        over = {**self.subst, **(inputs or {})}
        ins = tuple(over.get(v, v) if v is not None else None for v in node.inputs)
        self.b.emit(node if ins == node.inputs else replace(node, inputs=ins))

    def build(self, drop_params: Iterable[Param] = ()) -> Graph:
        """The new graph; parameters in ``drop_params`` that nothing reads any more go."""
        used = {v for n in self.b.nodes for v in n.inputs if v is not None}
        outs = list(self.graph.outputs)  # replaced nodes write their original output values
        used.update(outs)
        drop = {p.value for p in drop_params} - used
        self.b.params = [p for p in self.b.params if p.value not in drop]
        return self.b.build(outs)
