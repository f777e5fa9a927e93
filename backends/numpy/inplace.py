"""In-place execution for the NumPy interpreter: elementwise ufunc ops write into a dying input.

Two layers keep this safe:

* **Plan time** (:func:`plan_inplace`): a node qualifies when its op has a NumPy ufunc in
  :data:`UFUNCS` (the very call its kernel makes), its dtype has a native loop, and an input
  (statically) dies at the node, has the output's type (no broadcasting on that operand), owns
  its buffer (it is not a view, see :data:`VIEW_OPS`), and shares that buffer with nothing
  alive later or pinned (graph inputs, parameters, outputs). Values of fixed shape below
  :data:`INPLACE_MIN_BYTES` are not worth the check and never try (symbolic shapes do).
* **Run time** (:func:`make_inplace`): the array must be exactly an ``ndarray`` that owns its
  data, is writeable and C-contiguous, has the expected dtype, and no reference but the
  interpreter's own (``sys.getrefcount``, as NumPy's temporary elision does; every live view
  holds a reference to its base, so this also catches aliasing that the plan cannot see). The
  other operand must have the same dtype, so that no cast happens. Otherwise the ordinary kernel
  runs. A fresh ufunc result is C-contiguous whenever an operand of the output's shape is, so
  the result has the layout and the bits of the ordinary call (tested).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from lbdl_graph import ops
from lbdl_graph.analysis import last_uses
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import OpDef

__all__ = ["INPLACE_MIN_BYTES", "UFUNCS", "VIEW_OPS", "UfuncSpec", "make_inplace",
           "may_alias", "plan_inplace", "value_roots"]

INPLACE_MIN_BYTES = 16 * 1024
"""Statically smaller arrays never try in place (allocation is cheap there; the check is not)."""

_FLOATS = frozenset(np.dtype(t) for t in (np.float32, np.float64))
_NUMERIC = _FLOATS | frozenset(np.dtype(t) for t in (
    np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64))
_SIGNED = _NUMERIC - frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))


@dataclass(frozen=True, slots=True)
class UfuncSpec:
    """How an op's kernel calls its ufunc: ``ufunc(*inputs, out=...)``, or for a unary op with
    ``const`` set ``ufunc(x, dtype(const), out=x)``; ``dtypes`` are those whose kernel makes
    exactly this call (narrow floats go through float32 in the kernels and are left out)."""

    ufunc: np.ufunc
    arity: int
    dtypes: frozenset[np.dtype[Any]]
    const: float | None = None


def _u(ufunc: Any, dtypes: frozenset[np.dtype[Any]], const: float | None = None) -> UfuncSpec:
    return UfuncSpec(ufunc, 1 if const is not None else ufunc.nin, dtypes, const)


UFUNCS: dict[OpDef, UfuncSpec] = {
    ops.add: _u(np.add, _NUMERIC),
    ops.sub: _u(np.subtract, _NUMERIC),
    ops.mul: _u(np.multiply, _NUMERIC),
    ops.div: _u(np.divide, _FLOATS | {np.dtype(np.float16)}),  # integer div truncates instead
    ops.maximum: _u(np.maximum, _NUMERIC),
    ops.minimum: _u(np.minimum, _NUMERIC),
    ops.neg: _u(np.negative, _SIGNED),
    ops.abs_: _u(np.abs, _SIGNED),
    ops.exp: _u(np.exp, _FLOATS),
    ops.log: _u(np.log, _FLOATS),
    ops.sqrt: _u(np.sqrt, _FLOATS),
    ops.reciprocal: _u(np.reciprocal, _FLOATS),
    ops.sin: _u(np.sin, _FLOATS),
    ops.cos: _u(np.cos, _FLOATS),
    ops.tanh: _u(np.tanh, _FLOATS),
    ops.sigmoid: _u(special.expit, _FLOATS),
    ops.erf: _u(special.erf, _FLOATS),
    ops.floor: _u(np.floor, _FLOATS),
    ops.ceil: _u(np.ceil, _FLOATS),
    ops.round_: _u(np.rint, _FLOATS),
    ops.sign: _u(np.sign, _FLOATS),
    ops.relu: _u(np.maximum, _FLOATS, 0.0),  # np.maximum(x, 0, out=x)
    ops.softplus: _u(np.logaddexp, _FLOATS, 0.0),  # np.logaddexp(x, 0, out=x)
}

VIEW_OPS: frozenset[OpDef] = frozenset({
    ops.reshape, ops.transpose, ops.squeeze, ops.unsqueeze, ops.slice_, ops.split, ops.expand,
    ops.broadcast_like, ops.identity, ops.stop_gradient,
})
"""Ops whose kernel may return its first input or a view of it (every output)."""

_SHARED_OPS: frozenset[OpDef] = frozenset({ops.constant, ops.iota_like})  # not owned per run


def may_alias(node: Node, *, training: bool = True) -> bool:
    """True if the node's outputs may share memory with its first input."""
    op = node.op
    if op in VIEW_OPS:
        return True
    if op is ops.dropout:
        return not training  # evaluation mode passes the input through
    return op is ops.clip and node.attrs.get("min") is None and node.attrs.get("max") is None


def _static_bytes(v: Value) -> int | None:
    if not all(isinstance(d, int) for d in v.shape):
        return None
    return math.prod(v.shape) * v.dtype.numpy.itemsize


def value_roots(graph: Graph, *, training: bool = True) -> dict[Value, Value]:
    """For every node output, the value whose producer allocated its buffer (itself unless the
    node may return a view of, or the very array of, its first input)."""
    root: dict[Value, Value] = {}
    for node in graph.nodes:
        alias = may_alias(node, training=training) and node.inputs and node.inputs[0] is not None
        for v in node.outputs:
            src = node.inputs[0] if alias else None
            root[v] = root.get(src, src) if src is not None else v
    return root


def plan_inplace(graph: Graph, *, training: bool = True,
                 min_bytes: int = INPLACE_MIN_BYTES) -> dict[int, tuple[int, ...]]:
    """Node index -> the input positions it may overwrite, in order of preference."""
    nodes = graph.nodes
    last: dict[Value, float] = {}
    for i, dead in enumerate(last_uses(graph)):
        for v in dead:
            last[v] = i
    pinned_values = set(graph.inputs) | {p.value for p in graph.params} | set(graph.outputs)
    root = value_roots(graph, training=training)
    owner = {v for node in nodes for v in node.outputs
             if root[v] is v and node.op not in _SHARED_OPS}
    holders: dict[Value, list[Value]] = {}
    for v, r in root.items():
        holders.setdefault(r, []).append(v)
    pinned_roots = {root.get(v, v) for v in pinned_values}
    plan: dict[int, tuple[int, ...]] = {}
    for i, node in enumerate(nodes):
        spec = UFUNCS.get(node.op)
        if spec is None or len(node.outputs) != 1 or len(node.inputs) != spec.arity:
            continue
        out = node.outputs[0]
        if out.dtype.numpy not in spec.dtypes or any(
                u is None or u.dtype != out.dtype for u in node.inputs):
            continue
        size = _static_bytes(out)
        if size is not None and size < min_bytes:
            continue
        picks = []
        for k, u in enumerate(node.inputs):
            if (u is None or u.type != out.type or u not in owner or last.get(u) != i
                    or u in pinned_roots or k > node.inputs.index(u)):
                continue
            if all(h is u or last.get(h, math.inf) < i for h in holders.get(u, ())):
                picks.append(k)
        if picks:
            plan[i] = tuple(picks)
    return plan


# ------------------------------------------------------------------------------- run time

_MASK = 0x1 | 0x4 | 0x400  # NPY_ARRAY_C_CONTIGUOUS | OWNDATA | WRITEABLE
_getrefcount = sys.getrefcount
_ndarray = np.ndarray


def _probe(env: list[Any]) -> int:
    x = env[0]
    return _getrefcount(x)


_BASE = _probe([np.empty(1)])  # references held by env, the local and the call (3 on 3.11)


def _own(x: Any, dt: np.dtype[Any]) -> bool:
    """x is a writeable, C-contiguous ndarray of dtype dt that owns its data."""
    return type(x) is _ndarray and (x.flags.num & _MASK) == _MASK and x.dtype == dt


def make_inplace(node: Node, kernel: Callable[..., Any], ins: tuple[int, ...],
                 picks: Iterable[int]) -> Callable[[list[Any]], Any]:
    """A step function ``fn(env) -> result`` that computes in place where the run-time check
    allows it and calls ``kernel`` otherwise."""
    spec = UFUNCS[node.op]
    uf, dt = spec.ufunc, node.outputs[0].dtype.numpy
    picks = tuple(picks)
    if spec.arity == 1:
        (i,) = ins
        if spec.const is not None:
            c = dt.type(spec.const)

            def unary_const(env: list[Any]) -> Any:
                x = env[i]
                if _getrefcount(x) == _BASE and _own(x, dt):
                    return uf(x, c, out=x)
                return kernel(x)

            return unary_const

        def unary(env: list[Any]) -> Any:
            x = env[i]
            if _getrefcount(x) == _BASE and _own(x, dt):
                return uf(x, out=x)
            return kernel(x)

        return unary
    ia, ib = ins
    same = ia == ib  # a and b are one object: the extra local holds one more reference
    try_a, try_b = 0 in picks, 1 in picks and not same

    def binary(env: list[Any]) -> Any:
        a = env[ia]
        b = env[ib]
        try:
            if try_a and _getrefcount(a) == _BASE + same and _own(a, dt) and b.dtype == dt:
                return uf(a, b, out=a)
            if try_b and _getrefcount(b) == _BASE and _own(b, dt) and a.dtype == dt:
                return uf(a, b, out=b)
        except (ValueError, TypeError, AttributeError):  # NumPy checks before it writes
            pass
        return kernel(a, b)

    return binary
