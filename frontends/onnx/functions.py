"""Expansion of ONNX function ops (Attention, SoftmaxCrossEntropyLoss, CenterCropPad, ...).

Many ONNX ops are defined by a function body written with simpler ONNX ops. When the importer
has no handler for such an op it replaces the node by its body (as ONNX Runtime does for
functions it has no kernel for): edges are renamed with a per-node prefix, attribute references
are substituted and the schema's attribute defaults are filled in. Context-dependent bodies
(which depend on input types) get the types of the node's inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TypeProto

__all__ = ["expand_function", "has_function_body"]


def has_function_body(node: NodeProto, opset: int) -> bool:
    """True if the standard op of ``node`` is defined by a function body at ``opset``."""
    try:  # Any: onnx's defs.pyi lacks the function-body API (function_opset_versions, ...)
        schema: Any = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except Exception:
        return False
    return any(v <= opset for v in [*schema.function_opset_versions,
                                    *schema.context_dependent_function_opset_versions])


def _function_body(node: NodeProto, opset: int, input_types: Sequence[TypeProto | None]
                   ) -> FunctionProto | None:
    try:  # Any: onnx's defs.pyi lacks the function-body API (get_function_with_opset_version)
        schema: Any = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except Exception:  # no schema: not a standard op
        return None
    body = FunctionProto()
    plain = [v for v in schema.function_opset_versions if v <= opset]
    if plain:
        body.ParseFromString(schema.get_function_with_opset_version(max(plain)))
        return body
    ctx = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if not ctx or any(t is None for t in input_types):
        return None
    with_defaults = NodeProto()
    with_defaults.CopyFrom(node)
    _add_defaults(with_defaults, schema)
    try:
        data = schema.get_context_dependent_function_with_opset_version(
            max(ctx), with_defaults.SerializeToString(),
            [t.SerializeToString() for t in input_types if t is not None])
    except Exception:  # the schema refuses these input types or attributes
        return None
    body.ParseFromString(data)
    return body if body.node else None


def _add_defaults(node: NodeProto, schema: onnx.defs.OpSchema) -> None:
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value and attr.default_value.name:
            node.attribute.append(attr.default_value)


def _rename(inner: NodeProto, rename: Callable[[str], str],
            attrs: dict[str, AttributeProto]) -> NodeProto | None:
    out = NodeProto()
    out.CopyFrom(inner)
    del out.input[:]
    del out.output[:]
    del out.attribute[:]
    out.input.extend(rename(i) for i in inner.input)
    out.output.extend(rename(o) for o in inner.output)
    for a in inner.attribute:
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            sub = AttributeProto()
            sub.CopyFrom(a)
            for g in ([sub.g] if a.type == AttributeProto.GRAPH else list(sub.graphs)):
                if not _rename_graph(g, rename, attrs):
                    return None
            out.attribute.append(sub)
            continue
        if a.ref_attr_name:
            if a.ref_attr_name in attrs:
                new = AttributeProto()
                new.CopyFrom(attrs[a.ref_attr_name])
                new.name = a.name
                out.attribute.append(new)
            continue
        out.attribute.append(a)
    return out


def _rename_graph(g: onnx.GraphProto, rename: Callable[[str], str],
                  attrs: dict[str, AttributeProto]) -> bool:
    """Rename every tensor of a control-flow body in place, as :func:`_rename` does for a node
    (a body reads the function's tensors by name); False if a node of it cannot be renamed."""
    for vi in [*g.input, *g.output, *g.value_info]:
        vi.name = rename(vi.name)
    for t in g.initializer:
        t.name = rename(t.name)
    nodes = []
    for inner in g.node:
        new = _rename(inner, rename, attrs)
        if new is None:
            return False
        nodes.append(new)
    del g.node[:]
    g.node.extend(nodes)
    return True


def expand_function(node: NodeProto, opset: int, input_types: Sequence[TypeProto | None],
                    prefix: str) -> tuple[list[NodeProto], list[onnx.OperatorSetIdProto]] | None:
    """The nodes of ``node``'s function body (and the body's opsets), or None if it has none.

    Internal tensors are named ``prefix + name``; the body's inputs and outputs are wired to the
    node's own tensors.
    """
    body = _function_body(node, opset, input_types)
    if body is None:
        return None
    full = NodeProto()
    full.CopyFrom(node)
    try:
        _add_defaults(full, onnx.defs.get_schema(node.op_type, opset, node.domain))
    except Exception:
        return None
    attrs = {a.name: a for a in full.attribute}
    io: dict[str, str] = {}
    for i, name in enumerate(body.input):
        io[name] = node.input[i] if i < len(node.input) else ""
    for i, name in enumerate(body.output):
        if i < len(node.output) and node.output[i]:
            io[name] = node.output[i]

    def rename(name: str) -> str:
        if name in io:
            return io[name]
        return f"{prefix}{name}" if name else ""

    nodes = []
    for k, inner in enumerate(body.node):
        new = _rename(inner, rename, attrs)
        if new is None:
            return None
        if not new.name:
            new.name = f"{node.name or node.op_type}/{inner.op_type}_{k}"
        else:
            new.name = f"{node.name or node.op_type}/{new.name}"
        nodes.append(new)
    return nodes, list(body.opset_import)
