"""ONNX models as Model Explorer graphs (e.g. the exported model as ONNX Runtime optimised it).

Nodes are labelled by op type (with its domain when not the default one), their namespace is the
scope read from the node name or, failing that, the first output's name (our exporter's
``layers.0.attn/linear``, torch's ``/encoder/layer.0/attention/MatMul``); initializers become
parameter nodes beside their readers, graph inputs and outputs nodes of their own.
"""

from __future__ import annotations

from typing import Any

from .common import fmt_count, module_of
from .explorer_graph import (
    JSON,
    fmt_attr,
    home_scope,
    input_id,
    output_id,
    param_id,
    short_name,
)
from .scopes import scope_path

__all__ = ["onnx_me_graph", "onnx_scope"]


def _kv(key: str, value: str) -> JSON:
    return {"key": key, "value": value}


def onnx_scope(node_name: str, output_name: str = "") -> str:
    """The scope of an ONNX node from its name (or, failing that, its first output's name):
    ``layers.0.attn/linear`` -> ``layers.0/attn``; torch's ``/encoder/layer.0/attention/MatMul``
    -> ``encoder/layer.0/attention``."""
    for name in (node_name, output_name):
        scope = name.strip("/").rpartition("/")[0] if name.startswith("/") else module_of(name)
        if scope:
            return scope_path(scope)
    return ""


def onnx_me_graph(model: Any, graph_id: str, *, label: str = "") -> JSON:
    """An ONNX ``ModelProto`` as a Model Explorer graph: nodes by op type (with domain), scopes
    from names, initializers as parameter nodes beside their readers."""
    from onnx import helper

    g = model.graph
    types: dict[str, str] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        types[vi.name] = _onnx_type(vi.type)
    inits = {t.name: t for t in g.initializer}
    where: dict[str, tuple[str, int]] = {}
    for vi in g.input:
        if vi.name not in inits:
            where[vi.name] = (input_id(vi.name), 0)
    for name in inits:
        where[name] = (param_id(name), 0)
    scopes: dict[str, str] = {}
    for i, n in enumerate(g.node):
        nid = n.name or f"{n.op_type}_{i}"
        scopes[nid] = onnx_scope(n.name, n.output[0] if n.output else "")
        for k, o in enumerate(n.output):
            if o:
                where[o] = (nid, k)
    readers: dict[str, list[str]] = {}
    nodes: list[JSON] = []
    for i, n in enumerate(g.node):
        nid = n.name or f"{n.op_type}_{i}"
        op = f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        attrs = [_kv("op", op), _kv("name", nid)]
        attrs += [_kv(a.name, fmt_attr(_onnx_attr(helper.get_attribute_value(a))))
                  for a in n.attribute]
        attrs.append(_kv("inputs", ", ".join(f"{x}: {types.get(x, '?')}" if x else "_"
                                             for x in n.input)))
        attrs.append(_kv("outputs", ", ".join(f"{x}: {types.get(x, '?')}" for x in n.output)))
        attrs.append(_kv("scope", scopes[nid] or "(top level)"))
        edges = []
        for j, x in enumerate(n.input):
            if x and x in where:
                src, k = where[x]
                edges.append({"sourceNodeId": src, "sourceNodeOutputId": str(k),
                              "targetNodeInputId": str(j)})
                readers.setdefault(x, []).append(scopes[nid])
        out_meta = [{"id": str(k), "attrs": [_kv("tensor_name", o),
                                             _kv("shape", types.get(o, "?"))]}
                    for k, o in enumerate(n.output)]
        nodes.append({"id": nid, "label": n.op_type, "namespace": scopes[nid], "attrs": attrs,
                      "incomingEdges": edges, "outputsMetadata": out_meta})
    head: list[JSON] = []
    for vi in g.input:
        if vi.name not in inits:
            head.append(_onnx_value_node(input_id(vi.name), "input", "", vi.name,
                                         types.get(vi.name, "?"), "graph input"))
    for name, t in inits.items():
        try:
            dt = helper.tensor_dtype_to_np_dtype(t.data_type).name
        except (KeyError, TypeError, ValueError):
            dt = "?"
        dims = f"{dt}[{','.join(str(d) for d in t.dims)}]"
        head.append(_onnx_value_node(param_id(name), short_name(name),
                                     home_scope(name, [s.replace("/", ".") for s in
                                                  readers.get(name, [])]),
                                     name, dims, "initializer"))
    for o in g.output:
        if o.name in where:
            at = where[o.name]
            nodes.append({"id": output_id(o.name), "label": "output",
                          "namespace": scopes.get(at[0], ""),
                          "attrs": [_kv("op", "graph output"), _kv("name", o.name),
                                    _kv("inputs", types.get(o.name, "?"))],
                          "incomingEdges": [{"sourceNodeId": at[0],
                                             "sourceNodeOutputId": str(at[1]),
                                             "targetNodeInputId": "0"}]})
    counts: dict[str, int] = {}
    for n in g.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:8])
    group = {"": {"graph": g.name, "stage": label or graph_id, "nodes": fmt_count(len(g.node)),
                  "initializers": fmt_count(len(inits)), "ops": top}}
    return {"id": graph_id, "nodes": head + nodes, "groupNodeAttributes": group}


def _onnx_value_node(nid: str, label: str, ns: str, name: str, type_text: str, kind: str
                     ) -> JSON:
    return {"id": nid, "label": label, "namespace": ns,
            "attrs": [_kv("op", kind), _kv("name", name), _kv("outputs", type_text)],
            "incomingEdges": [],
            "outputsMetadata": [{"id": "0", "attrs": [_kv("tensor_name", name),
                                                      _kv("shape", type_text)]}]}


def _onnx_attr(value: Any) -> Any:
    """An ONNX attribute value in printable form (tensors summarised, bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return tuple(_onnx_attr(v) for v in value)
    if hasattr(value, "dims") and hasattr(value, "data_type"):
        from onnx import numpy_helper

        return numpy_helper.to_array(value)
    if hasattr(value, "node"):  # a subgraph
        return f"<graph {value.name}: {len(value.node)} nodes>"
    return value


def _onnx_type(t: Any) -> str:
    """``f32[N,16]``-like text of an ONNX type proto (``?`` when unknown)."""
    from onnx import helper

    if not t.HasField("tensor_type"):
        return "?"
    tt = t.tensor_type
    try:
        dt = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except (KeyError, TypeError, ValueError):
        dt = "?"
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")
            for d in tt.shape.dim]
    return f"{dt}[{','.join(dims)}]"
