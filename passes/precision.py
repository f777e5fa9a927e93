"""Half precision: ``convert_precision(graph, "float16")`` stores and computes an inference
graph in float16 (or bfloat16) and keeps float32 where accuracy needs it.

Every float32 parameter, constant and intermediate becomes the narrow type, except around the
ops of ``keep_float32`` (LayerNorm, BatchNorm, softmax, log-softmax, the float reductions and
cumulative sums, fused attention): their float inputs are cast up, they run in float32 and their
results are cast back, so normalisation statistics and softmax sums accumulate in float32.
Parameters read only by such ops stay float32. Constants are clipped to the narrow type's finite
range (the "lowest float32" that attention masks use becomes float16's -65504, not -inf, so a
fully masked row still gives uniform weights rather than NaN). Float graph inputs and outputs
keep float32 at the boundary unless named in ``narrow_io`` (a KV cache, say), which then take
and give the narrow type.
"""

from __future__ import annotations

from collections.abc import Collection

import ml_dtypes
import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import DType, dtype, float32
from lbdl_graph.errors import OpError
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult

__all__ = ["KEEP_FLOAT32", "NARROW_TYPES", "convert_precision"]

NARROW_TYPES = ("float16", "bfloat16")
KEEP_FLOAT32 = frozenset({"layer_norm", "batch_norm", "batch_norm_train", "softmax",
                          "log_softmax", "reduce_sum", "reduce_mean", "reduce_prod", "cumsum",
                          "attention"})


def _narrow_array(a: np.ndarray, dt: DType) -> np.ndarray:
    info = ml_dtypes.finfo(dt.numpy)
    with np.errstate(over="ignore", invalid="ignore"):
        clipped = np.where(np.isfinite(a), np.clip(a, float(info.min), float(info.max)), a)
    return np.asarray(clipped.astype(dt.numpy), order="C")


def _narrow_attr(v: object, dt: DType) -> object:
    if isinstance(v, DType) and v == float32:
        return dt
    if isinstance(v, np.ndarray) and v.dtype == np.float32:
        return _narrow_array(v, dt)
    return v


def convert_precision(graph: Graph, to: str = "float16", *,
                      keep_float32: Collection[str] = KEEP_FLOAT32,
                      narrow_io: Collection[str] = ()) -> PassResult:
    """``graph`` in ``to`` ("float16" or "bfloat16"); see the module docstring."""
    if to not in NARROW_TYPES:
        raise OpError(f"convert_precision: unknown type {to!r}; use one of {NARROW_TYPES}")
    dt = dtype(to)
    unknown = sorted(set(narrow_io) - {v.name for v in [*graph.inputs, *graph.outputs]})
    if unknown:
        raise OpError(f"convert_precision: {unknown} are not inputs or outputs of "
                      f"'{graph.name}'")
    keep = frozenset(keep_float32)
    b = GraphBuilder(graph.name)
    b.metadata = {**graph.metadata, "precision": to}
    env: dict[Value, Value] = {}
    wide: dict[Value, Value] = {}  # float32 versions of narrowed values
    narrowed = 0
    out_names = {v.name for v in graph.outputs} - {v.name for v in graph.inputs}
    b._names["value"].update(out_names)  # kept free for the outputs' final nodes
    with b:
        for v in graph.inputs:
            is_f32 = v.type.dtype == float32
            if is_f32 and v.name in narrow_io:
                env[v] = b.input(v.name, dt, v.type.shape)
            else:
                env[v] = x = b.input(v.name, v.type.dtype, v.type.shape)
                if is_f32:
                    wide[env[v]] = x
                    env[v] = ops.cast(x, to=dt)
        readers: dict[Value, set[bool]] = {}
        for n in graph.nodes:
            for r in n.inputs:
                if r is not None:
                    readers.setdefault(r, set()).add(n.op.name in keep)
        for p in graph.params:
            if p.data.dtype != np.float32:
                env[p.value] = b.param(p.name, p.data, trainable=p.trainable)
                continue
            uses = readers.get(p.value, set())
            if uses == {True}:  # read only by float32 ops
                env[p.value] = b.param(p.name, p.data, trainable=p.trainable)
                wide[env[p.value]] = env[p.value]
                continue
            env[p.value] = b.param(p.name, _narrow_array(p.data, dt), trainable=p.trainable)
            narrowed += 1
            if True in uses:
                wide[env[p.value]] = b.param(f"{p.name}.float32", p.data, trainable=False)
        for n in graph.nodes:
            _emit(b, n, env, wide, dt, n.op.name in keep)
        outs: dict[str, Value] = {}
        for v in graph.outputs:
            x = env[v]
            if v.type.dtype == float32 and x.type.dtype == dt and v.name not in narrow_io:
                x = wide.get(x) or ops.cast(x, to=float32)
            outs[v.name] = x
    b._names["value"] -= out_names
    new = b.build(outs)
    return PassResult(new, True, {"params": narrowed, "nodes": len(new.nodes)})


def _emit(b: GraphBuilder, n: Node, env: dict[Value, Value], wide: dict[Value, Value],
          dt: DType, in_float32: bool) -> None:
    ins: list[Value | None] = []
    for x in n.inputs:
        if x is None:
            ins.append(None)
            continue
        y = env[x]
        if in_float32 and y.type.dtype == dt and x.type.dtype == float32:
            if y not in wide:
                wide[y] = ops.cast(y, to=float32)
            y = wide[y]
        ins.append(y)
    attrs = dict(n.attrs) if in_float32 else {k: _narrow_attr(a, dt) for k, a in n.attrs.items()}
    scoped = bool(n.scope) and n.name.startswith(n.scope + "/")
    local = n.name[len(n.scope) + 1:] if scoped else n.name
    with b.scope(n.scope if scoped else ""):
        outs = b.add_node(n.op, ins, attrs, name=local, source=n.source)
    for old, new in zip(n.outputs, outs, strict=True):
        if in_float32 and new.type.dtype == float32 and old.type.dtype == float32:
            narrow = ops.cast(new, to=dt)
            wide[narrow] = new
            env[old] = narrow
        else:
            env[old] = new
