"""Elementwise-chain fusion: connected elementwise ops become one ``fused_elementwise`` node.

A group grows backwards from a root node over producers that are elementwise, have one output
that only the group reads (and that is no graph output), and are not random. Scalar-sized
constants read by the group are copied into its program. Groups of at least two ops become a
node holding a program of steps ``(op name, argument registers, attributes)``: registers
``0..n-1`` are the node's inputs and each step appends one (see
:data:`lbdl_graph.ops.fused_elementwise`). The fused node takes over the root's output Value,
its name and its source line, the common scope of the group and the origin
``fuse_elementwise:elementwise_chain``; fused nodes already in a group are inlined, so reruns
find nothing new.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import GraphError
from lbdl_graph.graph import Graph, Node, Value, common_scope
from lbdl_graph.opdef import Trait

from .base import PassResult

__all__ = ["MAX_CONST_ELEMENTS", "fuse_elementwise"]

MAX_CONST_ELEMENTS = 16  # constants up to this size are copied into the program
_NEVER = (ops.identity, ops.stop_gradient)  # naming and gradient markers stay visible


def _fusable(node: Node) -> bool:
    return (node.op.has(Trait.ELEMENTWISE) and not node.op.has(Trait.STOCHASTIC)
            and node.op not in _NEVER and len(node.outputs) == 1)


def _small_constant(node: Node | None) -> bool:
    return node is not None and node.op is ops.constant and \
        node.attrs["value"].size <= MAX_CONST_ELEMENTS


def _grow(root: Node, producer: dict[Value, Node], uses: Counter[Value], outputs: set[Value],
          taken: set[Node]) -> list[Node]:
    """The nodes of root's group (root included), in no particular order."""
    group = {root}
    reads: Counter[Value] = Counter(v for v in root.inputs if v is not None)
    pending = [v for v in root.inputs if v is not None]
    while pending:
        v = pending.pop()
        p = producer.get(v)
        if p is None or p in group or p in taken or not _fusable(p) or v in outputs:
            continue
        if reads[v] == uses[v]:  # else re-checked when another reader joins the group
            group.add(p)
            new = [u for u in p.inputs if u is not None]
            reads.update(new)
            pending.extend(new)
    return list(group)


def _program(group: list[Node], order: dict[Node, int],
             producer: dict[Value, Node]) -> tuple[list[Value], tuple[Any, ...]]:
    """The fused node's inputs and program for a group (nodes run in graph order)."""
    members = sorted(group, key=order.__getitem__)
    inside = {n.outputs[0] for n in members}
    inputs: list[Value] = []
    for n in members:
        for v in n.inputs:
            if v is not None and v not in inside and v not in inputs and \
                    not _small_constant(producer.get(v)):
                inputs.append(v)
    reg: dict[Value, int] = {v: i for i, v in enumerate(inputs)}
    steps: list[tuple[Any, ...]] = []

    def emit(step: tuple[Any, ...]) -> int:
        steps.append(step)
        return len(inputs) + len(steps) - 1

    for n in members:
        for v in n.inputs:
            if v is not None and v not in reg and v not in inside:  # an inlined constant
                reg[v] = emit(("constant", (), (("value", producer[v].attrs["value"]),)))
        args = tuple(reg[v] for v in n.inputs if v is not None)
        if n.op is ops.fused_elementwise:  # inline: its registers map onto ours
            local = list(args)
            for name, sub_args, attrs in n.attrs["program"]:
                local.append(emit((name, tuple(local[i] for i in sub_args), attrs)))
            reg[n.outputs[0]] = local[-1]
        else:
            reg[n.outputs[0]] = emit((n.op.name, args, tuple(n.attrs.items())))
    return inputs, tuple(steps)


def _size(group: list[Node]) -> int:
    return sum(len(n.attrs["program"]) if n.op is ops.fused_elementwise else 1 for n in group)


def fuse_elementwise(graph: Graph) -> PassResult:
    """Fuse chains of elementwise ops into ``fused_elementwise`` nodes; stats count the groups
    (``elementwise_chain``) and the ops they absorbed (``fused_ops``)."""
    producer = {v: n for n in graph.nodes for v in n.outputs}
    uses: Counter[Value] = Counter(v for n in graph.nodes for v in n.inputs if v is not None)
    outputs = set(graph.outputs)
    order = {n: i for i, n in enumerate(graph.nodes)}
    taken: set[Node] = set()
    groups: dict[Node, list[Node]] = {}
    for node in reversed(graph.nodes):
        if node in taken or not _fusable(node):
            continue
        group = _grow(node, producer, uses, outputs, taken)
        taken.update(group)
        if len(group) > 1:
            groups[node] = group
    if not groups:
        return PassResult(graph, False, {})
    b = GraphBuilder.from_graph(graph, copy_nodes=False)
    absorbed = {n for g in groups.values() for n in g}
    nodes: list[Node] = []
    for node in graph.nodes:
        if node in groups:
            inputs, program = _program(groups[node], order, producer)
            attrs = ops.fused_elementwise.check_attrs({"program": program})
            out = node.outputs[0]
            (t,) = ops.fused_elementwise.infer_types([v.type for v in inputs], attrs)
            if t != out.type:
                raise GraphError(f"fuse_elementwise: program gives {t}, expected {out.type}",
                                 node=node.name, op=node.op.name, source=node.source)
            scope = node.name.rpartition("/")[0]
            name = b.unique_name(f"{scope}/fused_elementwise" if scope else "fused_elementwise",
                                 "node")
            nodes.append(Node(ops.fused_elementwise, tuple(inputs), (out,), attrs, name,
                              node.source, common_scope(n.scope for n in groups[node]),
                              "fuse_elementwise:elementwise_chain"))
        elif node not in absorbed:
            nodes.append(node)
    live = Counter(v for n in nodes for v in n.inputs if v is not None)
    nodes = [n for n in nodes if not (_small_constant(n) and live[n.outputs[0]] == 0
                                      and n.outputs[0] not in outputs and uses[n.outputs[0]])]
    stats = {"elementwise_chain": len(groups), "fused_ops": sum(map(_size, groups.values()))}
    return PassResult(graph.replace(nodes=nodes), True, stats)
