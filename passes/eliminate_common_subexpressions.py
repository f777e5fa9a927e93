"""Common-subexpression elimination: nodes with the same op, inputs and attributes are merged.

Attributes are compared by value, tensors included (dtype, shape and bytes, so ``-0.0`` and
``0.0`` stay apart while equal NaNs merge); floats by their bits. Random ops are pure functions
of their key input and ``salt``, so two identical ones produce identical bits and merge too.
A duplicate whose output is a graph output becomes an identity of the kept node, so the output
keeps its name. The kept node keeps its scope and origin.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult

__all__ = ["attr_key", "eliminate_common_subexpressions"]


def attr_key(value: Any) -> Hashable:
    """A hashable key equal for attribute values that are equal by value."""
    if isinstance(value, np.ndarray):
        return ("tensor", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, tuple | list):
        return (type(value).__name__, *(attr_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", *sorted((k, attr_key(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return value


def _key(node: Node) -> Hashable:
    attrs = tuple((k, attr_key(v)) for k, v in node.attrs.items())
    return (node.op, tuple(id(v) if v is not None else None for v in node.inputs), attrs)


def eliminate_common_subexpressions(graph: Graph) -> PassResult:
    """Merge duplicate nodes into their first occurrence; stats count merged nodes."""
    b = GraphBuilder.from_graph(graph, copy_nodes=False)
    outputs = set(graph.outputs)
    subst: dict[Value, Value] = {}
    seen: dict[Hashable, Node] = {}
    nodes: list[Node] = []
    merged = 0
    for node in graph.nodes:
        inputs = tuple(subst.get(v, v) if v is not None else None for v in node.inputs)
        if any(new is not old for new, old in zip(inputs, node.inputs, strict=True)):
            node = replace(node, inputs=inputs)
        key = _key(node)
        first = seen.get(key)
        if first is None or (node.op is ops.identity and node.outputs[0] in outputs):
            seen.setdefault(key, node)
            nodes.append(node)
            continue
        merged += 1
        for old, new in zip(node.outputs, first.outputs, strict=True):
            if old in outputs:  # keep the output's name: identity(new) takes over the Value
                name = b.unique_name(f"{node.name}/identity", "node")
                nodes.append(Node(ops.identity, (new,), (old,), {}, name, node.source,
                                  node.scope, "eliminate_common_subexpressions:merged"))
            else:
                subst[old] = new
    if not merged:
        return PassResult(graph, False, {})
    return PassResult(graph.replace(nodes=nodes), True, {"merged": merged})
