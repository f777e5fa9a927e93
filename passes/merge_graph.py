"""Model merging as graph nodes: task arithmetic and TIES built from IR ops.

:func:`build_merge_graph` turns a base parameter set and its fine-tunes into a graph whose
outputs are the merged parameters, so that a merge can be printed, explored, exported to ONNX
and differentiated. Everything is computed in float64 and rounded once to each parameter's dtype,
as in :mod:`lbdl_graph.passes.merge` (the NumPy reference it must equal):

* task vectors ``τ_t = cast(θ_t) - cast(θ)`` (``sub``);
* task arithmetic ``θ + Σ_t λ_t τ_t`` with one 0-d parameter ``merge/lambda_t`` per task;
* TIES: trim with ``kth_largest`` (the magnitude threshold) + ``greater_equal`` + ``where``,
  elect ``sign(Σ_t trimmed_t)``, average the agreeing entries (a disjoint mean:
  ``Σ where(agree, τ, 0) / max(Σ agree, 1)``) and add ``merge/lambda`` times it.

The coefficients are trainable parameters with ``learn_coefficients=True`` (frozen otherwise), so
``grad`` gives d loss / d λ through the merge (the trim mask and the sign election carry no
gradient, as they are piecewise constant). :func:`emit_merge` emits the same nodes into an active
builder, next to a model that reads the merged values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import OpError, ShapeError
from lbdl_graph.graph import Graph, Value

from .merge import METHODS, _frozen_ints, _weights, check_compatible

__all__ = ["build_merge_graph", "emit_merge"]

ParamSet = Mapping[str, np.ndarray]
F64 = dtype("float64")


def _f64(v: Value) -> Value:
    return v if v.type.dtype == F64 else ops.cast(v, to=F64)


def _size(v: Value) -> int:
    return math.prod(int(d) for d in v.shape)


def _zero() -> Value:
    return ops.constant(value=np.zeros((), np.float64), name="zero")


def _trim(tau: Mapping[str, Value], density: float, per_tensor: bool) -> dict[str, Value]:
    """Zero the entries of τ below the top-``density`` magnitude threshold (ties kept)."""
    mags = {n: ops.abs_(t) for n, t in tau.items()}
    if per_tensor:
        thr = {n: ops.kth_largest(m, k=math.ceil(density * _size(m))) for n, m in mags.items()}
    else:
        total = sum(_size(m) for m in mags.values())
        flat = [ops.reshape(m, shape=(-1,)) for m in mags.values()]
        every = flat[0] if len(flat) == 1 else ops.concat(*flat, axis=0)
        t = ops.kth_largest(every, k=math.ceil(density * total))
        thr = dict.fromkeys(mags, t)
    return {n: ops.where(ops.greater_equal(mags[n], thr[n]), tau[n], _zero()) for n in tau}


def _ties_delta(trimmed: Sequence[Mapping[str, Value]], lam: Value) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for n in trimmed[0]:
        stack = [t[n] for t in trimmed]
        total = stack[0]
        for t in stack[1:]:
            total = ops.add(total, t)
        elected = ops.sign(total)
        count: Value | None = None
        kept: Value | None = None
        for t in stack:
            agree = ops.logical_and(ops.equal(ops.sign(t), elected),
                                    ops.logical_not(ops.equal(t, _zero())))
            one = ops.cast(agree, to=F64)
            part = ops.where(agree, t, _zero())
            count = one if count is None else ops.add(count, one)
            kept = part if kept is None else ops.add(kept, part)
        assert count is not None and kept is not None
        one_c = ops.constant(value=np.ones((), np.float64), name="one")
        mean = ops.div(kept, ops.maximum(count, one_c))  # kept is 0 where count is 0
        out[n] = ops.mul(lam, mean)
    return out


def emit_merge(base: Mapping[str, Value], finetuned: Sequence[Mapping[str, Value]],
               coefficients: Sequence[Value], method: str = "task_arithmetic", *,
               density: float = 0.2, per_tensor: bool = False) -> dict[str, Value]:
    """Emit the merge of float values into the active builder; returns name -> merged value
    (in each base value's dtype). ``coefficients``: one λ per fine-tune (task arithmetic) or
    one λ (TIES), each a 0-d float64 value."""
    if method not in METHODS:
        raise OpError(f"unknown merge method {method!r}; use one of {METHODS}")
    if not finetuned:
        raise OpError(f"{method}: no fine-tuned models given")
    want = len(finetuned) if method == "task_arithmetic" else 1
    if len(coefficients) != want:
        raise ShapeError(f"{method}: {len(coefficients)} coefficients, expected {want}")
    b64 = {n: _f64(v) for n, v in base.items()}
    taus = [{n: ops.sub(_f64(ft[n]), b64[n]) for n in base} for ft in finetuned]
    if method == "task_arithmetic":
        delta: dict[str, Value] = {}
        for n in base:
            acc = ops.mul(coefficients[0], taus[0][n])
            for lam, tau in zip(coefficients[1:], taus[1:], strict=True):
                acc = ops.add(acc, ops.mul(lam, tau[n]))
            delta[n] = acc
    else:
        if not 0.0 < density <= 1.0:
            raise ShapeError(f"ties_merge: density must be in (0, 1], got {density}")
        delta = _ties_delta([_trim(t, density, per_tensor) for t in taus], coefficients[0])
    out: dict[str, Value] = {}
    for n, v in base.items():
        merged = ops.add(b64[n], delta[n])
        out[n] = merged if v.type.dtype == F64 else ops.cast(merged, to=v.type.dtype)
    return out


def build_merge_graph(base: ParamSet, finetuned: Sequence[ParamSet],
                      method: str = "task_arithmetic", *,
                      weights: float | Sequence[float] = 1.0, density: float = 0.2,
                      lam: float = 1.0, per_tensor: bool = False,
                      learn_coefficients: bool = False, name: str = "merge") -> Graph:
    """A graph with no inputs whose outputs (named as the base's parameters) are the merged
    parameters. Parameters: ``base/<name>``, ``ft<t>/<name>`` (frozen) and the coefficients
    ``merge/lambda_<t>`` (task arithmetic, from ``weights``) or ``merge/lambda`` (TIES, ``lam``).
    Non-float parameters must be equal in every model and pass through unchanged."""
    fts = list(finetuned)
    if method not in METHODS:
        raise OpError(f"unknown merge method {method!r}; use one of {METHODS}")
    if not fts:
        raise OpError(f"{method}: no fine-tuned models given")
    check_compatible(base, fts, [f"model {i}" for i in range(len(fts))])
    _frozen_ints(base, fts)
    b = GraphBuilder(name)
    b.metadata["merge"] = {"method": method, "models": len(fts)}
    floats = [n for n, a in base.items() if np.asarray(a).dtype.kind == "f"]
    base_v = {n: b.param(f"base/{n}", np.asarray(a), trainable=False) for n, a in base.items()}
    ft_v = [{n: b.param(f"ft{t}/{n}", np.asarray(ft[n]), trainable=False) for n in floats}
            for t, ft in enumerate(fts)]
    if method == "task_arithmetic":
        values = _weights(weights, len(fts), "task_arithmetic")
        names = [f"merge/lambda_{t}" for t in range(len(fts))]
    else:
        values, names = [float(lam)], ["merge/lambda"]
    coefs = [b.param(nm, np.asarray(w, np.float64), trainable=learn_coefficients)
             for nm, w in zip(names, values, strict=True)]
    outputs: dict[str, Value] = {}
    with b:
        if floats:
            merged = emit_merge({n: base_v[n] for n in floats}, ft_v, coefs, method,
                                density=density, per_tensor=per_tensor)
        else:
            merged = {}
        for n in base:
            outputs[n] = merged[n] if n in merged else ops.identity(base_v[n])
    return b.build(outputs, prune=False)
