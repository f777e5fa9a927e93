"""Parameter folding for inference: layout ops applied to parameters become stored weights.

A linear layer keeps its weight as PyTorch does, ``(out, in)``, and computes
``x @ transpose(w)``; an inference graph would transpose every weight on every run (the NumPy
interpreter does; ONNX Runtime folds it at session start). This pass evaluates such chains once
and stores the result as a new parameter::

    %t = transpose[perm=(1, 0)](%fc.weight); %y = matmul(%x, %t)
    -> param %fc.weight.T: f32[in,out]; %y = matmul(%x, %fc.weight.T)

A node folds when its op only moves or converts data (:data:`FOLDABLE`: transpose, reshape,
(un)squeeze, slice, split, concat, gather, expand, tile, cast, identity), every input is a
parameter, a constant or already folded, its outputs have static shapes, and no output is larger
in bytes than the parameters and constants it is computed from (so ``expand`` never bloats the
weights and a weight-only int8/int4 tensor is never widened by folding its dequantising cast).
A folded value read by a node that does not fold becomes a parameter named after its source and
the ops applied (``w.T``, ``w.T.reshape``, ``w.f16``; ``_1``... on a clash), trainable
when any source is; its recipe is recorded in ``graph.metadata["folded_params"]``. A source
parameter still read elsewhere (a tied embedding) is kept next to its folded copy, one read by
nothing else is dropped. A chain that computes a graph output stays (the output keeps its name).
:func:`unfold_arrays` turns the stored weights of a folded graph back into the parameters of the
model (for merging with checkpoints) and :func:`refold_arrays` stores them again.

The stored data is a read-only NumPy view of the source where the op is one (transpose, reshape,
slice: folding copies nothing, and a tied weight and its transpose share memory); ONNX export
writes every initializer contiguously, except that a stored transpose of a weight stored too
becomes a Transpose node (``backends/onnx/tied.py``), so a tied weight is in the file once.

**Inference only.** Folding detaches the stored copy from the parameter it came from, so
training the folded graph would train the copy. The pass therefore leaves a graph marked as
training (``metadata["training"]`` true, traced in training mode, or a compiled training step,
``metadata["train_step"]``) unchanged; the pass manager adds it to a level only for inference
graphs (see :func:`lbdl_graph.passes.manager.run_passes`). It creates no nodes: the readers of a
folded value keep their name, scope and origin and read the new parameter instead.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Param, Value
from lbdl_graph.opdef import OpDef, Trait
from lbdl_graph.types import tensor_type

from .base import PassResult
from .fold_constants import FOLDERS, fold_node

__all__ = ["FOLDABLE", "fold_params", "is_training_graph", "refold_arrays", "unfold_arrays"]

FOLDABLE: frozenset[OpDef] = frozenset(
    {op for op in FOLDERS if op.has(Trait.SHAPE) and op is not ops.broadcast_like}
    | {ops.identity, ops.cast})
"""Ops that only move, view or convert data: foldable when their inputs are stored data."""

_SUFFIX = {ops.transpose: "T", ops.squeeze: "reshape", ops.unsqueeze: "reshape",
           ops.reshape: "reshape", ops.slice_: "slice", ops.concat: "concat",
           ops.gather: "gather", ops.expand: "expand", ops.tile: "tile"}


def is_training_graph(graph: Graph) -> bool:
    """True for a graph traced in training mode or a compiled training step."""
    return bool(graph.metadata.get("training")) or "train_step" in graph.metadata


@dataclass(frozen=True)
class _Folded:
    """A value computed from stored data: its array, the data it reads and a readable name."""

    data: np.ndarray
    roots: frozenset[Value]
    name: str
    recipe: str
    anchor: Value | None  # the first parameter it reads (new parameters are listed after it)
    alias: Value | None = None  # for identity: the value it equals


def _nbytes(v: Value) -> int:
    return (int(np.prod([int(d) for d in v.shape], dtype=np.int64)) * v.dtype.bits + 7) // 8


def _leaf(v: Value, data: np.ndarray, name: str, param: bool) -> _Folded:
    return _Folded(data, frozenset([v]), name, name, v if param else None)


def _suffix(node: Node, index: int) -> str:
    if node.op is ops.cast:
        return str(node.attrs["to"].short)
    if node.op is ops.split:
        return f"split{index}"
    return _SUFFIX.get(node.op, node.op.name)


def _attrs_text(node: Node) -> str:
    parts = [f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in node.attrs.items()
             if v is not None]
    return f"[{', '.join(parts)}]" if parts else ""


def _fold_node(node: Node, known: dict[Value, _Folded]) -> list[_Folded] | None:
    """The folded outputs of ``node``, or None when it must stay computed."""
    if node.op not in FOLDABLE or not node.inputs:
        return None
    args = [known.get(v) if v is not None else None for v in node.inputs]
    if any(a is None for a, v in zip(args, node.inputs, strict=True) if v is not None):
        return None
    present = [a for a in args if a is not None]
    if not present or any(not v.type.is_static for v in node.outputs):
        return None
    lead = next((a for a in present if a.anchor is not None), None)
    if lead is None:
        return None  # constants only: fold_constants' work
    roots = frozenset().union(*(a.roots for a in present))
    budget = sum(_nbytes(r) for r in roots)
    if any(_nbytes(v) > budget for v in node.outputs):
        return None
    if node.op is ops.identity:
        return [replace(present[0], alias=node.inputs[0])]
    try:
        out = fold_node(node, [a.data if a is not None else None for a in args])
    except Exception:  # a folder that cannot handle these values declines, as fold_constants
        return None
    if out is None:
        return None
    results = list(out) if isinstance(out, tuple | list) else [out]
    if len(results) != len(node.outputs):
        return None
    inner = ", ".join(a.recipe for a in present)
    folded = []
    for i, (v, r) in enumerate(zip(node.outputs, results, strict=True)):
        arr = np.asarray(r)
        if list(arr.shape) != [int(d) for d in v.shape]:
            return None
        recipe = f"{node.op.name}{_attrs_text(node)}({inner})"
        if len(node.outputs) > 1:
            recipe += f"[{i}]"
        data = np.asarray(arr, dtype=v.dtype.numpy)
        if data.base is not None:  # a view of the source's data: never written through
            data = data.view()
            data.flags.writeable = False
        folded.append(_Folded(data, roots, f"{lead.name}.{_suffix(node, i)}", recipe,
                              lead.anchor))
    return folded


def fold_params(graph: Graph) -> PassResult:
    """Store layout-op chains over parameters as new parameters (inference graphs only).

    Stats: ``folded`` nodes removed, ``new_params`` created, ``kept_sources`` (source parameters
    kept because something else reads them) and ``dropped_sources``.
    """
    if is_training_graph(graph):
        return PassResult(graph, False, {})
    known = {p.value: _leaf(p.value, p.data, p.name, True) for p in graph.params}
    outputs = set(graph.outputs)
    folded: set[Node] = set()
    for node in graph.nodes:
        if node.op is ops.constant:
            known[node.outputs[0]] = _leaf(node.outputs[0], node.attrs["value"], node.name, False)
            continue
        if any(v in outputs for v in node.outputs):
            continue
        results = _fold_node(node, known)
        if results is not None:
            folded.add(node)
            known.update(zip(node.outputs, results, strict=True))
    return _rebuild(graph, folded, known) if folded else PassResult(graph, False, {})


def _needed(graph: Graph, folded: set[Node]) -> set[Node]:
    """The folded nodes whose values a node that stays computed reads (directly or not)."""
    stack = [graph.producers[v] for n in graph.nodes if n not in folded for v in n.inputs
             if v is not None and v in graph.producers and graph.producers[v] in folded]
    needed: set[Node] = set()
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(graph.producers[v] for v in n.inputs
                         if v is not None and graph.producers.get(v) in folded)
    return needed


def _rebuild(graph: Graph, folded: set[Node], known: dict[Value, _Folded]) -> PassResult:
    """Replace every folded value that a kept node reads by a parameter (or its alias)."""
    removed = _needed(graph, folded)
    if not removed:
        return PassResult(graph, False, {})  # folded values nobody reads: dead code stays
    made = {v for n in removed for v in n.outputs}
    taken = set(graph.values) | {n.name for n in graph.nodes}
    trainable = {p.value: p.trainable for p in graph.params}
    new_params: list[Param] = []
    recipes: dict[str, Any] = dict(graph.metadata.get("folded_params", {}))
    sub: dict[Value, Value] = {}
    by_recipe: dict[str, Value] = {}
    anchor: dict[Value, Value | None] = {}
    known_roots: dict[Value, frozenset[Value]] = {}

    def stored(v: Value) -> Value:
        if v not in sub:
            f = known[v]
            if f.alias is not None:
                sub[v] = stored(f.alias) if f.alias in made else f.alias
            elif f.recipe in by_recipe:  # the same chain traced twice (unrolled loops)
                sub[v] = by_recipe[f.recipe]
            else:
                name, i = f.name, 0
                while name in taken:
                    i += 1
                    name = f"{f.name}_{i}"
                taken.add(name)
                sub[v] = Value(name, tensor_type(v.dtype, tuple(int(d) for d in v.shape)))
                new_params.append(Param(sub[v], f.data, any(trainable.get(r, False)
                                                             for r in f.roots)))
                anchor[sub[v]] = f.anchor
                known_roots[sub[v]] = f.roots
                recipes[name] = f.recipe
                by_recipe[f.recipe] = sub[v]
        return sub[v]

    nodes: list[Node] = []
    for n in graph.nodes:
        if n in removed:
            continue
        if any(v in made for v in n.inputs):
            n = replace(n, inputs=tuple(stored(v) if v in made else v for v in n.inputs))
        nodes.append(n)
    nodes = _drop_orphan_constants(graph, nodes)
    before = {v for n in graph.nodes for v in n.inputs if v is not None} | set(graph.outputs)
    after = {v for n in nodes for v in n.inputs if v is not None} | set(graph.outputs)
    params = [p for p in graph.params if p.value in after or p.value not in before]
    sources = {r for p in new_params for r in known_roots[p.value] if r in trainable}
    stats = {"folded": len(removed), "new_params": len(new_params),
             "kept_sources": sum(1 for p in params if p.value in sources),
             "dropped_sources": len(graph.params) - len(params)}
    meta = {**graph.metadata, "folded_params": recipes} if recipes else dict(graph.metadata)
    ordered = _ordered(graph, params, new_params, anchor)
    return PassResult(graph.replace(nodes=nodes, params=ordered, metadata=meta), True,
                      {k: v for k, v in stats.items() if v})


def _ordered(graph: Graph, kept: list[Param], new: list[Param],
             anchor: dict[Value, Value | None]) -> list[Param]:
    """The kept parameters, each new one right after its source (or where its source was)."""
    after: dict[Value | None, list[Param]] = {}
    for p in new:
        after.setdefault(anchor[p.value], []).append(p)
    keep = {p.value for p in kept}
    out = [q for p in graph.params
           for q in ([p] if p.value in keep else []) + after.pop(p.value, [])]
    return out + [q for group in after.values() for q in group]


def _drop_orphan_constants(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` without the constants that only folded nodes read."""
    reads = Counter(v for n in nodes for v in n.inputs if v is not None)
    read_before = {v for n in graph.nodes for v in n.inputs if v is not None}
    outputs = set(graph.outputs)
    return [n for n in nodes if not (n.op is ops.constant and n.outputs[0] in read_before
                                     and not reads[n.outputs[0]]
                                     and n.outputs[0] not in outputs)]


_TRANSPOSE = re.compile(r"transpose\[perm=\[([0-9, ]+)\]\]\(([^()]+)\)")

Folds = dict[str, tuple[str, tuple[int, ...], bool]]
"""Stored weight -> (the model parameter it transposes, the permutation, whether that parameter
is stored too)."""


def unfold_arrays(arrays: Mapping[str, np.ndarray], recipes: Mapping[str, Any]
                  ) -> tuple[dict[str, np.ndarray], Folds]:
    """The model's parameters behind the stored weights of a folded graph.

    ``recipes`` is ``graph.metadata["folded_params"]``. Each stored transpose ``w.T`` of a
    parameter ``w`` is read back as ``w`` (dropped when ``w`` is stored too: a tied weight);
    other stored weights keep their names. Returns the arrays and what :func:`refold_arrays`
    needs to store them again.
    """
    state = dict(arrays)
    folds: Folds = {}
    for name, recipe in recipes.items():
        m = _TRANSPOSE.fullmatch(str(recipe))
        if name not in arrays or m is None:
            continue
        perm = tuple(int(a) for a in m.group(1).split(","))
        src, arr = m.group(2), np.asarray(arrays[name])
        if sorted(perm) != list(range(arr.ndim)):
            continue
        back = arr.transpose(np.argsort(perm))
        if src in state and np.shape(state[src]) != back.shape:
            continue
        folds[name] = (src, perm, src in arrays)
        del state[name]
        state.setdefault(src, np.ascontiguousarray(back))
    return state, folds


def refold_arrays(state: Mapping[str, np.ndarray], folds: Folds) -> dict[str, np.ndarray]:
    """The stored weights of a folded graph from the model's parameters (the inverse of
    :func:`unfold_arrays`)."""
    derived = {src for src, _, stored in folds.values() if not stored}
    out = {k: v for k, v in state.items() if k not in derived}
    for name, (src, perm, _) in folds.items():
        out[name] = np.ascontiguousarray(np.asarray(state[src]).transpose(perm))
    return out
