"""Per-node data overlays for Model Explorer: sizes, costs, memory kept for backward, measured
time and the pass diff.

Each overlay is a mapping node id -> value for one graph (:func:`param_values`,
:func:`mac_values`, ...). :func:`node_data` wraps such mappings, keyed by graph id, into Model
Explorer's ``ModelNodeData`` JSON form (one file per overlay, loadable by any Model Explorer),
colouring nodes on a white-to-colour gradient. :func:`diff_data` colours the nodes of two stages
as the pass diff saw them: removed nodes on the *before* graph, added, fused and changed ones on
the *after* graph, each labelled with the rule that made it (``"fused: fuse_linear"``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lbdl_graph.graph import Graph, Node, Value

from .common import Bindings, type_bytes
from .diff import GraphDiff
from .explorer_graph import input_id, param_id
from .scopes import node_scope, scope_parts
from .summary import node_macs

__all__ = [
    "DIFF_COLORS",
    "backward_roots",
    "bytes_values",
    "diff_data",
    "diff_results",
    "diff_rules",
    "mac_values",
    "node_data",
    "numpy_time_values",
    "ort_time_values",
    "param_values",
    "results_data",
    "saved_for_backward",
]

Values = dict[str, float]
JSON = dict[str, Any]
Results = dict[str, JSON]

#: The colour of each diff status.
DIFF_COLORS = {"removed": "#f4a3a3", "changed": "#f6e58d", "added": "#a8e6a1",
               "fused": "#c9b3f5"}
#: Scope roots of the nodes a training step adds to the forward graph.
backward_roots = frozenset({"grad"})
_update_roots = frozenset({"optim", "optimizer"})


def param_values(graph: Graph, trainable_inputs: Iterable[str] = ()) -> Values:
    """Parameter elements per parameter node (and per state input that is a trainable
    parameter, for training steps); summed over a scope this is the scope's parameter count."""
    out: Values = {param_id(p.name): float(p.data.size) for p in graph.params}
    names = set(trainable_inputs)
    for v in graph.inputs:
        if v.name in names:
            out[input_id(v.name)] = float(np.prod([d for d in v.shape if isinstance(d, int)]))
    return out


def mac_values(graph: Graph, bindings: Bindings | None = None) -> Values:
    """Multiply-accumulates per op node (:func:`~.summary.node_macs`), zeros left out."""
    out: Values = {}
    for n in graph.nodes:
        m = node_macs(n, bindings)
        if m:
            out[n.name] = float(m)
    return out


class _Bytes:
    """Bytes of a value's type under fixed bindings, cached per type object."""

    def __init__(self, bindings: Bindings | None) -> None:
        self.bindings = bindings
        self._cache: dict[Any, int] = {}

    def __call__(self, v: Value) -> int:
        n = self._cache.get(v.type)
        if n is None:
            n = self._cache[v.type] = type_bytes(v.type, self.bindings)
        return n


def bytes_values(graph: Graph, bindings: Bindings | None = None) -> Values:
    """Bytes of every op node's outputs."""
    size = _Bytes(bindings)
    return {n.name: float(sum(size(v) for v in n.outputs)) for n in graph.nodes}


@functools.lru_cache(maxsize=65536)
def _scope_root(scope: str) -> str:
    parts = scope_parts(scope)
    return parts[0] if parts else ""


def _root(node: Node) -> str:
    return _scope_root(node_scope(node))


def saved_for_backward(step: Graph, bindings: Bindings | None = None) -> Values:
    """Activation memory kept for the backward pass, per forward node of a training step: the
    bytes of its outputs that a backward node (scope ``grad/...``) reads. Forward nodes are the
    ones outside the ``grad`` and ``optim`` scopes; activations are the values that depend on
    the step's data inputs (its ``batch``), so weights and values computed from weights alone
    (a transposed weight) do not count; a data input the backward reads counts on its node."""
    meta = step.metadata.get("train_step") or {}
    batch = set(meta.get("batch", ())) or {v.name for v in step.inputs}
    data = {v for v in step.inputs if v.name in batch}
    consumers = step.consumers
    size = _Bytes(bindings)
    out: Values = {input_id(v.name): float(size(v)) for v in data
                   if any(_root(c) in backward_roots for c in consumers.get(v, ()))}
    for n in step.nodes:
        if _root(n) in backward_roots or _root(n) in _update_roots:
            continue
        if not any(v in data for v in n.inputs if v is not None):
            continue
        data.update(n.outputs)
        kept = sum(size(v) for v in n.outputs
                   if any(_root(c) in backward_roots for c in consumers.get(v, ())))
        if kept:
            out[n.name] = float(kept)
    return out


def _dims(graph: Graph, bindings: Bindings | None) -> dict[str, int]:
    """Sizes for every symbolic input dim: ``bindings``, else 1."""
    dims = {str(d): 1 for v in graph.inputs for d in v.shape if not isinstance(d, int)}
    dims.update(bindings or {})
    return dims


def numpy_time_values(graph: Graph, bindings: Bindings | None = None, *,
                      state: Mapping[str, np.ndarray] | None = None, repeat: int = 3,
                      training: bool = False) -> Values:
    """Measured microseconds per node on the NumPy interpreter's profiler (the fastest of
    ``repeat`` runs on random inputs; ``state`` gives a training step's state inputs)."""
    from lbdl_graph.backends.numpy import Interpreter
    from lbdl_graph.passes.manager import random_inputs

    feeds = random_inputs(graph, dims=_dims(graph, bindings))
    feeds.update(state or {})
    interp = Interpreter(graph, profile=True, training=training)
    best: Values = {}
    for _ in range(max(1, repeat)):
        interp.run(feeds)
        for p in interp.last_profile:
            us = p.seconds * 1e6
            best[p.node] = min(best.get(p.node, us), us)
    return best


def ort_time_values(model: Any, bindings: Bindings | None = None, *, repeat: int = 3) -> Values:
    """Microseconds per node of an ONNX model from ONNX Runtime's profiler (the node names of
    the model as given, e.g. as ONNX Runtime optimised it; the fastest of ``repeat`` runs)."""
    import os
    import tempfile

    import onnxruntime as ort
    from onnx import helper

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        dims = dict(bindings or {})
        feeds = {}
        for i in sess.get_inputs():
            proto = next(x for x in model.graph.input if x.name == i.name)
            dt = helper.tensor_dtype_to_np_dtype(proto.type.tensor_type.elem_type)
            shape = [d if isinstance(d, int) else int(dims.get(str(d), 1)) for d in i.shape]
            feeds[i.name] = (rng.standard_normal(shape).astype(dt) if dt.kind == "f"
                             else rng.integers(0, 2, shape).astype(dt))
        for _ in range(max(1, repeat)):
            sess.run(None, feeds)
        path = sess.end_profiling()
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    best: Values = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            us = float(e.get("dur", 0))
            best[node] = min(best.get(node, us), us)
    return best


def _graph_data(name: str, values: Values, color: str) -> JSON:
    return {"name": name, "results": {k: {"value": v} for k, v in values.items()},
            "gradient": [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 1, "bgColor": color}]}


def node_data(name: str, per_graph: Mapping[str, Values], color: str = "#e8710a") -> JSON:
    """A ``ModelNodeData`` (JSON-ready): for each graph id its values on a white-to-``color``
    gradient (graphs without values are left out)."""
    return {gid: _graph_data(name, vals, color) for gid, vals in per_graph.items() if vals}


def _mark(status: str, rule: str) -> JSON:
    return {"value": f"{status}: {rule}" if rule else status, "bgColor": DIFF_COLORS[status]}


def diff_results(d: GraphDiff, side: str = "after") -> Results:
    """Node-data results of a diff on one side: ``"before"`` marks the removed nodes (and the
    old side of changed ones), ``"after"`` the added, fused and changed nodes. Each value is the
    status and the rule that made (or replaced) the node, e.g. ``"fused: fuse_linear"``, on the
    status colour of :data:`DIFF_COLORS`."""
    out: Results = {}
    graph = d.before if side == "before" else d.after
    for n in graph.nodes:
        status = d.status(n.name, side=side)
        if status != "kept":
            out[n.name] = _mark(status, d.rules.get(n.name) or n.origin)
    return out


def results_data(name: str, per_graph: Mapping[str, Results]) -> JSON:
    """A ``ModelNodeData`` from ready-made results (explicit colours) per graph id."""
    return {gid: {"name": name, "results": dict(res)} for gid, res in per_graph.items() if res}


def diff_data(name: str, d: GraphDiff, before_id: str, after_id: str) -> JSON:
    """The diff between two stages as one ``ModelNodeData``: removed (and the old side of
    changed) nodes on graph ``before_id``, added, fused and changed ones on ``after_id``."""
    before, after = diff_results(d, "before"), diff_results(d, "after")
    if before_id == after_id:
        return results_data(name, {after_id: {**before, **after}})
    return results_data(name, {before_id: before, after_id: after})


def diff_rules(d: GraphDiff) -> dict[str, str]:
    """Node name -> its diff mark as text (both sides; the new side wins on a shared name)."""
    out = {k: str(v["value"]) for k, v in diff_results(d, "before").items()}
    out.update((k, str(v["value"])) for k, v in diff_results(d, "after").items())
    return out
