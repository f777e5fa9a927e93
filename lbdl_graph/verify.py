"""The verifier: checks that a graph is well formed before any pass or backend touches it."""

from __future__ import annotations

from .analysis import find_cycle
from .errors import DTypeError, GraphError, LbdlError, OpError, ShapeError
from .graph import Graph, Node, Value
from .opdef import OPS

__all__ = ["verify"]


def _fail(cls: type[LbdlError], msg: str, node: Node | None = None) -> LbdlError:
    if node is None:
        return cls(msg)
    return cls(msg, node=node.name, op=node.op.name, source=node.source)


def verify(graph: Graph) -> Graph:
    """Check SSA, acyclicity, definitions before use, types against the op rules, parameters
    and outputs. Raises a typed :class:`~lbdl_graph.errors.LbdlError` naming the node and its
    source line; returns the graph unchanged on success."""
    defined: dict[Value, str] = {}
    names: dict[str, str] = {}

    def define(v: Value, where: str, node: Node | None = None) -> None:
        if not isinstance(v, Value):
            raise _fail(GraphError, f"{where} defines {v!r}, which is not a Value", node)
        if v in defined:
            raise _fail(GraphError, f"SSA violation: value %{v.name} is defined by {defined[v]} "
                        f"and again by {where}", node)
        if v.name in names:
            raise _fail(GraphError, f"two values are named %{v.name} ({names[v.name]} and "
                        f"{where})", node)
        defined[v] = where
        names[v.name] = where

    for v in graph.inputs:
        define(v, f"graph input '{v.name}'")
    for p in graph.params:
        define(p.value, f"parameter '{p.name}'")
        shape, dt = tuple(p.data.shape), p.data.dtype
        if shape != tuple(p.value.shape) or dt != p.value.dtype.numpy:
            raise GraphError(f"parameter '{p.name}' is declared {p.value.type} but its data is "
                             f"{dt}{list(shape)}")

    producers = {v: n for n in graph.nodes for v in n.outputs}
    node_names: set[str] = set()
    for node in graph.nodes:
        if OPS.get(node.op.name) is not node.op:
            raise _fail(OpError, f"unknown op '{node.op.name}'", node)
        if node.name in node_names:
            raise _fail(GraphError, f"two nodes are named '{node.name}'", node)
        node_names.add(node.name)
        for i, u in enumerate(node.inputs):
            if u is None or u in defined:
                continue
            if u in producers:
                cycle = find_cycle(graph.nodes)
                if cycle:
                    raise _fail(GraphError, "graph has a cycle: " + " -> ".join(cycle + cycle[:1]),
                                node)
                raise _fail(GraphError, f"input {i} (%{u.name}) is used before node "
                            f"'{producers[u].name}' defines it (nodes are out of order)", node)
            raise _fail(GraphError, f"input {i} (%{u.name}) is not defined in the graph", node)
        _verify_bodies(node)
        _check_node_types(node)
        for v in node.outputs:
            define(v, f"node '{node.name}'", node)

    if not graph.outputs:
        raise GraphError(f"graph '{graph.name}' has no outputs")
    for v in graph.outputs:
        if v not in defined:
            raise GraphError(f"graph output %{v.name} is not produced by any node, input or "
                             "parameter")
    return graph


def _verify_bodies(node: Node) -> None:
    """Verify the nested graphs a node holds (control-flow bodies); errors name the outer node
    and the body attribute, then the inner node."""
    for key, sub in node.attrs.items():
        if not isinstance(sub, Graph):
            continue
        try:
            verify(sub)
        except LbdlError as e:
            inner = f" at node '{e.node}'" if e.node else ""
            raise type(e)(f"body {key}{inner}: {e.message}", node=node.name, op=node.op.name,
                          source=node.source, hint=e.hint) from None


def _check_node_types(node: Node) -> None:
    op = node.op
    try:
        op.check_arity(len(node.inputs))
        attrs = op.check_attrs(node.attrs)
        if set(attrs) != set(node.attrs):
            raise OpError(f"attributes {sorted(node.attrs)} do not match the schema "
                          f"{sorted(attrs)}")
        expected = op.infer_types([v.type if v is not None else None for v in node.inputs],
                                  node.attrs)
    except LbdlError as e:
        raise e.with_context(node=node.name, op=op.name, source=node.source) from None
    if len(expected) != len(node.outputs):
        raise _fail(GraphError, f"has {len(node.outputs)} outputs, the op's rule gives "
                    f"{len(expected)}", node)
    for v, t in zip(node.outputs, expected, strict=True):
        if v.type.dtype != t.dtype:
            raise _fail(DTypeError, f"output %{v.name} is declared {v.type} but the rule gives "
                        f"{t}", node)
        if tuple(v.type.shape) != tuple(t.shape):
            ins = ", ".join(str(x.type) if x is not None else "_" for x in node.inputs)
            raise _fail(ShapeError, f"output %{v.name} is declared {v.type} but the rule gives "
                        f"{t} (inputs: {ins})", node)
