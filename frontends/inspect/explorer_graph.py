"""Graphs as Model Explorer JSON: one node per op, input, parameter and output, nested by scope.

:func:`me_graph` turns an IR :class:`~lbdl_graph.graph.Graph` into the JSON form of Model
Explorer's ``graph_builder.Graph`` (plain dicts, so that 100,000-node graphs convert in seconds):

* a node's ``namespace`` is its scope as a tree path (:func:`~.scopes.scope_path`), so a GPT
  opens as its top-level layers, each collapsible;
* parameters and graph inputs become nodes in the scope that reads them, graph outputs nodes
  beside their producer (nothing crowds the top level);
* each node lists its op, attributes, input and output types, the DSL source line, its scope
  and origin (the pass and rule that made it);
* ``groupNodeAttributes`` give every scope its totals (nodes, parameters, MACs, output bytes).

:mod:`.explorer_onnx` does the same for ONNX models (as ONNX Runtime optimised them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lbdl_graph.graph import Graph, Node, Value

from .common import Bindings, fmt_count, resolve_numel, type_bytes
from .scopes import node_scope, scope_parts, scope_path
from .summary import node_macs

__all__ = [
    "fmt_attr",
    "home_scope",
    "input_id",
    "me_collection",
    "me_graph",
    "output_id",
    "param_id",
    "short_name",
]

JSON = dict[str, Any]
MAX_ELEMENTS = 16  # constant values shown in full up to this many elements


def input_id(name: str) -> str:
    """The Model Explorer node id of graph input ``name``."""
    return f"input:{name}"


def param_id(name: str) -> str:
    """The node id of parameter (or ONNX initializer) ``name``."""
    return f"param:{name}"


def output_id(name: str) -> str:
    """The node id of graph output ``name``."""
    return f"output:{name}"


def fmt_attr(value: Any) -> str:
    """An attribute value as short text: arrays as ``f32[2,3] [...]``, tuples as ``(1, 2)``."""
    if isinstance(value, np.ndarray):
        head = f"{value.dtype}{list(value.shape)}"
        if value.size > MAX_ELEMENTS:
            return head
        flat = value.ravel().tolist()
        items = (", ".join(f"{x:.6g}" for x in flat) if value.dtype.kind == "f"
                 else ", ".join(str(x) for x in flat))
        return f"{head} [{items}]"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _kv(key: str, value: str) -> JSON:
    return {"key": key, "value": value}


def home_scope(name: str, scopes: list[str]) -> str:
    """Where a non-op value (input, parameter) lives: the longest module prefix of its name that
    one of its readers lives in, else the common scope of its readers (tree path form)."""
    prefix = name.rpartition(".")[0]
    while prefix:
        if any(s == prefix or s.startswith(prefix + ".") for s in scopes):
            return scope_path(prefix)
        prefix = prefix.rpartition(".")[0]
    if not scopes:
        return ""
    common = scope_parts(scopes[0])
    for s in scopes[1:]:
        parts = scope_parts(s)
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return "/".join(common)


def short_name(name: str) -> str:
    """The last level of a dotted or ``/`` path (``layers.0.attn.q.weight`` -> ``weight``)."""
    return name.replace("/", ".").rpartition(".")[2] or name


class _Sources:
    """DSL source locations as text, package- or project-relative (never a machine path;
    see :mod:`lbdl_graph.source`), cached per location."""

    def __init__(self) -> None:
        self._text: dict[object, str] = {}

    def __call__(self, node: Node) -> str:
        loc = node.source
        if loc is None:
            return ""
        text = self._text.get(loc)
        if text is None:
            text = self._text[loc] = str(loc)
        return text


class _Text:
    """Cached text of the types and scope paths of one conversion."""

    def __init__(self) -> None:
        self._types: dict[Any, str] = {}
        self._paths: dict[str, str] = {}

    def type(self, v: Value | None) -> str:
        if v is None:
            return "_"
        text = self._types.get(v.type)
        if text is None:
            text = self._types[v.type] = str(v.type)
        return text

    def path(self, scope: str) -> str:
        text = self._paths.get(scope)
        if text is None:
            text = self._paths[scope] = scope_path(scope)
        return text


_SLOTS = [str(i) for i in range(64)]


def _slot(i: int) -> str:
    return _SLOTS[i] if i < 64 else str(i)


def _op_node(node: Node, ns: str, rule: str, where: Mapping[Value, tuple[str, int]],
             source: str, text: _Text) -> JSON:
    names = node.op.inputs
    attrs = [{"key": "op", "value": node.op.name}]
    if node.attrs:
        attrs += [{"key": k, "value": fmt_attr(v)} for k, v in node.attrs.items()]
    attrs.append({"key": "inputs", "value": ", ".join([text.type(v) for v in node.inputs])})
    attrs.append({"key": "outputs", "value": ", ".join([text.type(v) for v in node.outputs])})
    if source:
        attrs.append({"key": "source", "value": source})
    attrs.append({"key": "origin", "value": rule or "traced"})
    edges = []
    in_meta = []
    tags = len(node.inputs) > 1 and names  # input names help only when there are several
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        src, k = where[v]
        edges.append({"sourceNodeId": src, "sourceNodeOutputId": _slot(k),
                      "targetNodeInputId": _slot(i)})
        if tags:
            slot = names[min(i, len(names) - 1)].strip("*?")
            in_meta.append({"id": _slot(i), "attrs": [{"key": "__tensor_tag", "value": slot}]})
    out_meta = [{"id": _slot(k), "attrs": [{"key": "tensor_name", "value": v.name},
                                           {"key": "shape", "value": text.type(v)}]}
                for k, v in enumerate(node.outputs)]
    out = {"id": node.name, "label": node.op.name, "namespace": ns, "attrs": attrs,
           "incomingEdges": edges, "outputsMetadata": out_meta}
    if in_meta:
        out["inputsMetadata"] = in_meta
    return out


def _value_node(nid: str, label: str, ns: str, v: Value, kind: str, extra: Iterable[JSON] = ()
                ) -> JSON:
    attrs = [_kv("op", kind), _kv("name", v.name), _kv("outputs", str(v.type)), *extra]
    return {"id": nid, "label": label, "namespace": ns, "attrs": attrs, "incomingEdges": [],
            "outputsMetadata": [{"id": "0", "attrs": [_kv("tensor_name", v.name),
                                                      _kv("shape", str(v.type))]}]}


def _output_node(v: Value, ns: str, src: tuple[str, int]) -> JSON:
    return {"id": output_id(v.name), "label": "output", "namespace": ns,
            "attrs": [_kv("op", "graph output"), _kv("name", v.name), _kv("inputs", str(v.type))],
            "incomingEdges": [{"sourceNodeId": src[0], "sourceNodeOutputId": str(src[1]),
                               "targetNodeInputId": "0"}]}


class _Totals:
    """Per-scope totals (nodes, parameters, MACs, output bytes, op counts), every prefix."""

    def __init__(self) -> None:
        self.sums: dict[str, list[int]] = {}
        self.ops: dict[str, dict[str, int]] = {}
        self._keys: dict[str, list[str]] = {}

    def add(self, ns: str, nodes: int, params: int, macs: int, nbytes: int, op: str = ""
            ) -> None:
        keys = self._keys.get(ns)
        if keys is None:
            parts = ns.split("/") if ns else []
            keys = self._keys[ns] = ["", *("/".join(parts[: i + 1]) for i in range(len(parts)))]
        for key in keys:
            t = self.sums.get(key)
            if t is None:
                t = self.sums[key] = [0, 0, 0, 0]
                self.ops[key] = {}
            t[0] += nodes
            t[1] += params
            t[2] += macs
            t[3] += nbytes
            if op:
                counts = self.ops[key]
                counts[op] = counts.get(op, 0) + 1

    def attributes(self) -> dict[str, dict[str, str]]:
        out = {}
        for key, (nodes, params, macs, nbytes) in self.sums.items():
            top = sorted(self.ops[key].items(), key=lambda kv: (-kv[1], kv[0]))[:6]
            out[key] = {"nodes": fmt_count(nodes), "parameters": fmt_count(params),
                        "MACs": fmt_count(macs), "output bytes": fmt_count(nbytes),
                        "ops": ", ".join(f"{k} {v}" for k, v in top)}
        return out


def me_graph(graph: Graph, graph_id: str, *, rules: Mapping[str, str] | None = None,
             bindings: Bindings | None = None, label: str = "",
             trainable: Iterable[str] = (),
             notes: Mapping[str, list[tuple[str, str]]] | None = None,
             macs: Mapping[str, float] | None = None,
             out_bytes: Mapping[str, float] | None = None) -> JSON:
    """``graph`` as a Model Explorer graph (JSON-ready dict) with id ``graph_id``.

    ``rules``: node name -> the pass (and rule) that made it, for nodes whose ``origin`` is
    empty; ``bindings`` size symbolic dims in the scope totals; ``trainable`` names inputs that
    are trainable parameters (the state inputs of a training step); ``notes`` adds (key, value)
    attributes to named nodes (what the pass diff says of them); ``macs`` and ``out_bytes``
    (per node name, as the overlays have them) save computing them again for the totals.
    """
    rules = rules or {}
    notes = notes or {}
    text = _Text()
    where: dict[Value, tuple[str, int]] = {}
    for v in graph.inputs:
        where[v] = (input_id(v.name), 0)
    for p in graph.params:
        where[p.value] = (param_id(p.name), 0)
    for n in graph.nodes:
        for k, v in enumerate(n.outputs):
            where[v] = (n.name, k)
    consumers = graph.consumers
    learnable = set(trainable)
    totals = _Totals()

    def reader_scopes(v: Value) -> list[str]:
        return [node_scope(c) for c in consumers.get(v, ())]

    nodes: list[JSON] = []
    for v in graph.inputs:
        kind = "parameter (state input)" if v.name in learnable else "graph input"
        ns = home_scope(v.name, reader_scopes(v))
        nodes.append(_value_node(input_id(v.name), short_name(v.name) if v.name in learnable
                                 else "input", ns, v, kind))
        if v.name in learnable:
            totals.add(ns, 0, resolve_numel(v, bindings), 0, 0)
    for p in graph.params:
        ns = home_scope(p.name, reader_scopes(p.value))
        nodes.append(_value_node(param_id(p.name), short_name(p.name), ns, p.value,
                                 "parameter" if p.trainable else "buffer",
                                 [_kv("elements", fmt_count(p.data.size))]))
        totals.add(ns, 0, int(p.data.size), 0, 0)
    source = _Sources()
    for n in graph.nodes:
        ns = text.path(node_scope(n))
        nd = _op_node(n, ns, n.origin or rules.get(n.name, ""), where, source(n), text)
        if n.name in notes:
            nd["attrs"] += [_kv(k, v) for k, v in notes[n.name]]
        nodes.append(nd)
        m = macs.get(n.name, 0) if macs is not None else node_macs(n, bindings)
        b = (out_bytes[n.name] if out_bytes is not None
             else sum(type_bytes(v.type, bindings) for v in n.outputs))
        totals.add(ns, 1, 0, int(m), int(b), n.op.name)
    homes = {nd["id"]: nd["namespace"] for nd in nodes}
    for v in graph.outputs:
        src = where[v]
        nodes.append(_output_node(v, homes.get(src[0], ""), src))
    groups = totals.attributes()
    groups[""] = {"graph": graph.name, "stage": label or graph_id, **groups.get("", {}),
                  "inputs": ", ".join(f"{v.name}: {v.type}" for v in graph.inputs[:8])
                  + (" ..." if len(graph.inputs) > 8 else "")}
    return {"id": graph_id, "nodes": nodes, "groupNodeAttributes": groups}


def me_collection(label: str, graphs: list[JSON]) -> JSON:
    """A graph collection (what Model Explorer's JSON loader reads), graphs in the given order
    (their ids sort by name in stage order)."""
    return {"label": label, "graphs": graphs, "graphSorting": "name_asc"}
