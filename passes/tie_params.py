"""Tie parameters that are stored twice: bit-identical copies become one parameter again.

An exported model can store one trained tensor under two names. The classic case is a tied
embedding in a legacy ``torch.onnx.export`` of GPT-2: the token table ``wte.weight`` (V, D)
feeds the Gather, and its constant-folded transpose (D, V) feeds the vocabulary MatMul. For
inference this is harmless, but fine-tuning would update the two copies separately.

:func:`tie_params` finds trainable float parameters whose bytes equal another's, either as
they are (same shape) or transposed (a 2-D parameter equal to another's transpose). It keeps
the first parameter in graph order and makes every reader of a copy read it (through one
``transpose`` node for a transposed copy), so gradients of both uses add up in one parameter.
A tensor whose elements are all equal (zero biases, LayerNorm scales of ones) is never tied:
equal bytes there say nothing about the tensors being one. The tied names are returned and
recorded in ``graph.metadata["tied_params"]`` (``copy -> kept`` or ``copy -> transpose(kept)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.graph import Graph, Param, Value

from .base import PassResult

__all__ = ["TieReport", "find_copies", "tie_params", "tie_params_pass"]


@dataclass(frozen=True)
class TieReport:
    """The graph with copies tied and, per dropped copy, the kept parameter and how it maps."""

    graph: Graph
    tied: Mapping[str, str] = field(default_factory=dict)  # copy -> kept or transpose(kept)

    def __str__(self) -> str:
        if not self.tied:
            return "no parameters tied"
        return "tied " + ", ".join(f"{k} = {v}" for k, v in self.tied.items())


def _digest(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).digest()


def _candidate(p: Param) -> bool:
    a = p.data
    if not p.trainable or a.dtype.kind != "f" or a.size < 2:
        return False
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(a.size, -1)
    return not bool((flat == flat[0]).all())  # constant tensors: equal bytes prove nothing


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        (np.ascontiguousarray(a).view(np.uint8) == np.ascontiguousarray(b).view(np.uint8)).all())


def find_copies(graph: Graph) -> dict[str, tuple[str, bool]]:
    """``copy -> (kept, transposed)`` for every parameter stored twice (see the module doc)."""
    cands = [p for p in graph.params if _candidate(p)]
    by_key: dict[tuple[str, tuple[int, ...], bytes], Param] = {}
    shapes = {(p.data.dtype.str, p.data.shape) for p in cands}
    out: dict[str, tuple[str, bool]] = {}
    for p in cands:
        a = p.data
        key = (a.dtype.str, a.shape, _digest(a))
        kept = by_key.get(key)
        if kept is not None and _same(kept.data, a):
            out[p.name] = (kept.name, False)
            continue
        if a.ndim == 2 and (a.dtype.str, a.shape[::-1]) in shapes:
            t = by_key.get((a.dtype.str, a.shape[::-1], _digest(a.T)))
            if t is not None and _same(t.data, np.ascontiguousarray(a.T)):
                out[p.name] = (t.name, True)
                continue
        by_key.setdefault(key, p)
    return out


def tie_params(graph: Graph) -> TieReport:
    """Tie every parameter stored twice (see the module doc); the graph is unchanged if none."""
    copies = find_copies(graph)
    if not copies:
        return TieReport(graph, {})
    params = graph.param_map
    b = GraphBuilder.from_graph(graph, copy_nodes=False)
    b.params = [p for p in graph.params if p.name not in copies]
    subst: dict[Value, Value] = {}
    with b:
        for copy, (kept, transposed) in copies.items():
            v = params[kept].value
            if transposed:
                with b.provenance(origin="tie_params:transpose"):
                    v = ops.transpose(v, perm=(1, 0), name=f"tied/{copy}")
            subst[params[copy].value] = v
    for n in graph.nodes:
        if any(v in subst for v in n.inputs if v is not None):
            n = replace(n, inputs=tuple(subst.get(v, v) if v is not None else None
                                        for v in n.inputs))
        b.emit(n)
    tied = {c: (f"transpose({k})" if t else k) for c, (k, t) in copies.items()}
    b.metadata["tied_params"] = {**graph.metadata.get("tied_params", {}), **tied}
    if any(v in subst for v in graph.outputs):  # a copy read as an output keeps its name
        return TieReport(b.build({v.name: subst.get(v, v) for v in graph.outputs}), tied)
    return TieReport(b.build(list(graph.outputs)), tied)


def tie_params_pass(graph: Graph) -> PassResult:
    """:func:`tie_params` as a pass; stats count ties by kind (``copy``, ``transpose``)."""
    rep = tie_params(graph)
    kinds = {"copy": 0, "transpose": 0}
    for v in rep.tied.values():
        kinds["transpose" if v.startswith("transpose(") else "copy"] += 1
    return PassResult(rep.graph, bool(rep.tied), {k: n for k, n in kinds.items() if n})
