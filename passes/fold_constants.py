"""Constant folding: nodes whose inputs are all constants become ``constant`` nodes.

Passes may not import the backends, so folding uses its own small NumPy evaluator,
:data:`FOLDERS`, for the ops that matter in practice: arithmetic, comparisons, ``where``,
``cast`` and the shape ops (shape computations are what produces constant subgraphs). Each
folder follows the ONNX semantics of the NumPy kernels (integer division truncates, narrow
floats compute in float32); the tests check them against the kernels. A caller that wants
every op folded can pass ``evaluate=`` (for example one that calls the NumPy backend's kernels).

Parameters are never folded (their data changes when the model trains), nor are stochastic
ops, and results with more than ``max_elements`` elements stay computed, so that folding never
bloats the graph (``expand`` of a scalar to a large shape). A folded node's constant keeps its
name, source and scope; its origin is ``fold_constants:folded``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import OpDef, Trait
from lbdl_graph.shapes import (
    Dim,
    broadcast_shapes,
    is_static,
    normalize_axes,
    normalize_axis,
    reshape_shape,
)

from .base import PassResult

__all__ = ["FOLDERS", "Evaluate", "fold_constants", "fold_node"]

Array = np.ndarray
Evaluate = Callable[[Node, Sequence["Array | None"]], "Array | Sequence[Array] | None"]
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


def _float(fn: Callable[[Array], Any]) -> Callable[[Array], Array]:
    """Float math in the input's dtype (narrow floats computed in float32, as the kernels)."""

    def fold(x: Array) -> Array:
        if x.dtype not in _NATIVE:
            return np.asarray(fn(x.astype(np.float32))).astype(x.dtype)
        return np.asarray(fn(x))

    return fold


def _div(a: Array, b: Array) -> Array | None:
    if a.dtype.kind not in "iu":
        return np.asarray(np.divide(a, b))
    if not b.all():
        return None
    q = np.floor_divide(a, b)
    return q + ((q * b != a) & ((a < 0) != (b < 0))) if a.dtype.kind == "i" else q


def _pow(a: Array, b: Array) -> Array | None:
    if b.dtype.kind in "iu" and (b < 0).any():
        return None
    if a.dtype.kind in "iu":
        return np.asarray(np.power(a, b))
    return _float(lambda v: np.power(v, b.astype(v.dtype)))(a)


def _cast(x: Array, *, to: Any) -> Array | None:
    if to.numpy.kind in "iub" and x.dtype.kind == "f" and not np.isfinite(x).all():
        return None  # NaN/inf -> integer is undefined
    return x.astype(to.numpy)


def _reshape(x: Array, *, shape: tuple[int, ...]) -> Array:
    return x.reshape(reshape_shape(x.shape, shape))


def _broadcast(x: Array, shape: Sequence[Dim]) -> Array | None:
    out = broadcast_shapes(x.shape, shape)
    return np.broadcast_to(x, out) if is_static(out) else None  # a symbolic dim: decline


def _slice(x: Array, *, starts: tuple[int, ...], ends: tuple[int, ...],
           axes: tuple[int, ...] | None, steps: tuple[int, ...] | None) -> Array | None:
    index = [slice(None)] * x.ndim
    for s, e, a, k in zip(starts, ends, axes or range(len(starts)), steps or (1,) * len(starts),
                          strict=True):
        if k <= 0:
            return None  # ONNX clamps negative steps differently from Python
        index[normalize_axis(a, x.ndim)] = slice(s, e, k)
    return x[tuple(index)]


def _squeeze(x: Array, *, axes: tuple[int, ...] | None) -> Array:
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=normalize_axes(axes, x.ndim))


def _unsqueeze(x: Array, *, axes: tuple[int, ...]) -> Array:
    return np.expand_dims(x, normalize_axes(axes, x.ndim + len(axes)))


def _split(x: Array, *, axis: int, split: tuple[int, ...]) -> tuple[Array, ...]:
    return tuple(np.split(x, np.cumsum(split[:-1]), axis=normalize_axis(axis, x.ndim)))


def _iota(like: Array, *, axis: int | None) -> Array:
    if axis is None:
        return np.arange(like.size, dtype=np.int64).reshape(like.shape)
    a = normalize_axis(axis, like.ndim)
    line = np.arange(like.shape[a], dtype=np.int64)
    return np.broadcast_to(line.reshape([-1 if i == a else 1 for i in range(like.ndim)]),
                           like.shape)


def _full(like: Array, *, value: float, dtype: Any) -> Array:
    dt = like.dtype if dtype is None else dtype.numpy
    return np.full(like.shape, np.asarray(value).astype(dt), dtype=dt)


def _reduce(fn: Callable[..., Any]) -> Callable[..., Array]:
    def fold(x: Array, *, axes: tuple[int, ...] | None, keepdims: bool) -> Array:
        return np.asarray(fn(x, axis=normalize_axes(axes, x.ndim), keepdims=keepdims))

    return fold


FOLDERS: dict[OpDef, Callable[..., Any]] = {
    ops.add: np.add, ops.sub: np.subtract, ops.mul: np.multiply, ops.div: _div, ops.pow_: _pow,
    ops.maximum: np.maximum, ops.minimum: np.minimum, ops.neg: np.negative, ops.abs_: np.abs,
    ops.exp: _float(np.exp), ops.log: _float(np.log), ops.sqrt: _float(np.sqrt),
    ops.reciprocal: _float(np.reciprocal), ops.sin: _float(np.sin), ops.cos: _float(np.cos),
    ops.tanh: _float(np.tanh), ops.floor: _float(np.floor), ops.ceil: _float(np.ceil),
    ops.round_: _float(np.rint), ops.relu: _float(lambda x: np.maximum(x, x.dtype.type(0))),
    ops.equal: np.equal, ops.less: np.less, ops.less_equal: np.less_equal,
    ops.greater: np.greater, ops.greater_equal: np.greater_equal,
    ops.logical_and: np.logical_and, ops.logical_or: np.logical_or,
    ops.logical_not: np.logical_not, ops.bitwise_and: np.bitwise_and,
    ops.bitwise_or: np.bitwise_or, ops.bitwise_xor: np.bitwise_xor, ops.where: np.where,
    ops.identity: lambda x: x, ops.cast: _cast,
    ops.reshape: _reshape, ops.transpose: lambda x, *, perm: np.transpose(x, perm),
    ops.squeeze: _squeeze, ops.unsqueeze: _unsqueeze, ops.slice_: _slice, ops.split: _split,
    ops.concat: lambda *xs, axis: np.concatenate(xs, axis=normalize_axis(axis, xs[0].ndim)),
    ops.expand: lambda x, *, shape: _broadcast(x, shape),
    ops.broadcast_like: lambda x, like: _broadcast(x, like.shape),
    ops.tile: lambda x, *, repeats: np.tile(x, repeats),
    ops.gather: lambda x, i, *, axis: np.take(x, i, axis=normalize_axis(axis, x.ndim)),
    ops.full_like: _full, ops.iota_like: _iota,
    ops.reduce_max: _reduce(np.max), ops.reduce_min: _reduce(np.min),
}

# inputs whose shape, not value, an op reads: foldable when the shape is static
_SHAPE_ONLY: dict[OpDef, tuple[int, ...]] = {
    ops.full_like: (0,), ops.iota_like: (0,), ops.broadcast_like: (1,),
}


def fold_node(node: Node, args: Sequence[Array | None]) -> Array | Sequence[Array] | None:
    """Evaluate one node with :data:`FOLDERS`; None when the op has no folder or declines."""
    fn = FOLDERS.get(node.op)
    if fn is None:
        return None
    with np.errstate(all="ignore"):
        return fn(*args, **node.attrs)


def _args(node: Node, known: dict[Value, Array]) -> list[Array | None] | None:
    args: list[Array | None] = []
    for i, v in enumerate(node.inputs):
        if v is None:
            args.append(None)
        elif v in known:
            args.append(known[v])
        elif i in _SHAPE_ONLY.get(node.op, ()) and v.type.is_static:
            args.append(np.zeros([int(d) for d in v.shape], dtype=v.dtype.numpy))
        else:
            return None
    return args


def _fold(node: Node, args: list[Array | None], evaluate: Evaluate,
          max_elements: int) -> list[Array] | None:
    try:
        out = evaluate(node, args)
    except Exception:  # an evaluator that cannot handle these values declines
        return None
    if out is None:
        return None
    results = list(out) if isinstance(out, tuple | list) else [out]
    if len(results) != len(node.outputs):
        return None
    folded = []
    for v, r in zip(node.outputs, results, strict=True):
        arr = np.asarray(r)
        if arr.size > max_elements or list(arr.shape) != list(v.shape):
            return None
        folded.append(np.array(arr, dtype=v.dtype.numpy, order="C"))
    return folded


def fold_constants(graph: Graph, *, max_elements: int = 4096,
                   evaluate: Evaluate | None = None) -> PassResult:
    """Replace nodes computable from constants by ``constant`` nodes (same output Values).

    ``evaluate(node, input_arrays)`` computes a node or returns None to leave it; the default
    is :func:`fold_node`. Constants the folding leaves unused are removed.
    """
    evaluate = evaluate or fold_node
    known: dict[Value, Array] = {}
    nodes: list[Node] = []
    folded = 0
    for node in graph.nodes:
        if node.op is ops.constant:
            known[node.outputs[0]] = node.attrs["value"]
        elif not (node.op.has(Trait.STOCHASTIC) or node.op.has(Trait.COLLECTIVE)) and \
                (args := _args(node, known)) is not None:
            arrays = _fold(node, args, evaluate, max_elements)
            if arrays is not None:
                folded += 1
                for i, (v, arr) in enumerate(zip(node.outputs, arrays, strict=True)):
                    name = node.name if len(node.outputs) == 1 else f"{node.name}:{i}"
                    nodes.append(Node(ops.constant, (), (v,), ops.constant.check_attrs(
                        {"value": arr}), name, node.source, node.scope, "fold_constants:folded"))
                    known[v] = nodes[-1].attrs["value"]
                continue
        nodes.append(node)
    if not folded:
        return PassResult(graph, False, {})
    kept = _drop_orphans(graph, nodes)
    removed = len(nodes) - len(kept)
    stats = {"folded": folded, **({"dead_nodes": removed} if removed else {})}
    return PassResult(graph.replace(nodes=kept), True, stats)


def _drop_orphans(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` without those whose outputs were used before folding and are unused now."""
    before = {v for n in graph.nodes for v in n.inputs if v is not None}
    live = Counter(v for n in nodes for v in n.inputs if v is not None)
    outputs = set(graph.outputs)
    kept: list[Node] = []
    for n in reversed(nodes):
        unused = all(live[v] == 0 and v not in outputs for v in n.outputs)
        if unused and any(v in before for v in n.outputs):
            live.subtract(v for v in n.inputs if v is not None)
        else:
            kept.append(n)
    return kept[::-1]
