"""ONNX reductions, arg-reductions, softmax variants and cumulative sums."""

from __future__ import annotations

from typing import Any

from lbdl_graph import ops
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axis

from .context import NodeCtx, handles

INT_MAX = 2**63 - 1

_REDUCE = {"ReduceSum": ops.reduce_sum, "ReduceMean": ops.reduce_mean,
           "ReduceMax": ops.reduce_max, "ReduceMin": ops.reduce_min,
           "ReduceProd": ops.reduce_prod}
_COMPOSITE = ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")


def _reduce_axes(n: NodeCtx) -> tuple[int, ...] | str | None:
    """The axes attribute for our reduce ops: a tuple, None (all) or "noop"."""
    axes = n.axes(1)
    if not axes:
        return "noop" if n.attr("noop_with_empty_axes", 0) else None
    return tuple(axes)


@handles(*_REDUCE, *_COMPOSITE)
def _reduce(n: NodeCtx) -> Value:
    x = n.x(0)
    axes = _reduce_axes(n)
    keep = bool(n.attr("keepdims", 1))
    t = n.op_type
    if axes == "noop":  # no axes and noop_with_empty_axes: the elementwise part only
        if t in ("ReduceL1", "ReduceL2"):
            return n.emit(ops.abs_, x, out=0)
        if t == "ReduceSumSquare":
            return n.emit(ops.mul, x, x, out=0)
        if t == "ReduceLogSum":
            return n.emit(ops.log, x, out=0)
        return n.emit(ops.identity, x, out=0)
    kw: dict[str, Any] = {"axes": axes, "keepdims": keep}
    if t in _REDUCE:
        return n.emit(_REDUCE[t], x, out=0, **kw)
    if t == "ReduceL1":
        return n.emit(ops.reduce_sum, n.emit(ops.abs_, x), out=0, **kw)
    if t == "ReduceSumSquare":
        return n.emit(ops.reduce_sum, n.emit(ops.mul, x, x), out=0, **kw)
    if t == "ReduceL2":
        return n.emit(ops.sqrt, n.emit(ops.reduce_sum, n.emit(ops.mul, x, x), **kw), out=0)
    if t == "ReduceLogSum":
        return n.emit(ops.log, n.emit(ops.reduce_sum, x, **kw), out=0)
    # ReduceLogSumExp, stabilised by the max: log(sum(exp(x - m))) + m
    m = n.emit(ops.reduce_max, x, axes=axes, keepdims=True)
    s = n.emit(ops.reduce_sum, n.emit(ops.exp, n.emit(ops.sub, x, m)), **kw)
    if not keep:
        full = tuple(range(x.ndim)) if axes is None else axes
        m = n.emit(ops.squeeze, m, axes=full)
    return n.emit(ops.add, n.emit(ops.log, s), m, out=0)


@handles("ArgMax", "ArgMin")
def _arg(n: NodeCtx) -> Value:
    x = n.x(0)
    op = ops.argmax if n.op_type == "ArgMax" else ops.argmin
    axis = normalize_axis(n.attr("axis", 0), x.ndim)
    keep = bool(n.attr("keepdims", 1))
    if not n.attr("select_last_index", 0):
        return n.emit(op, x, axis=axis, keepdims=keep, out=0)
    dim = x.shape[axis]
    if not isinstance(dim, int):
        raise n.unsupported(f"select_last_index needs a static dim on axis {axis}, got {x.type}")
    rev = n.emit(ops.slice_, x, starts=(-1,), ends=(-INT_MAX,), axes=(axis,), steps=(-1,))
    idx = n.emit(op, rev, axis=axis, keepdims=keep)
    return n.emit(ops.sub, n.constant(dim - 1, "int64"), idx, out=0)


@handles("Softmax", "LogSoftmax")
def _softmax(n: NodeCtx) -> Value:
    op = ops.softmax if n.op_type == "Softmax" else ops.log_softmax
    return n.emit(op, n.x(0), axis=n.attr("axis", -1), out=0)


@handles("Hardmax")
def _hardmax(n: NodeCtx) -> Value:
    x = n.x(0)
    axis = normalize_axis(n.attr("axis", -1), x.ndim)
    idx = n.emit(ops.argmax, x, axis=axis, keepdims=True)
    hit = n.emit(ops.equal, n.emit(ops.iota_like, x, axis=axis), idx)
    return n.emit(ops.cast, hit, to=x.dtype, out=0)


@handles("CumSum")
def _cumsum(n: NodeCtx) -> Value:
    axis = n.ints(1, "axis")
    if not axis or len(axis) != 1:
        raise n.error(f"axis must be a scalar, got {axis}")
    return n.emit(ops.cumsum, n.x(0), axis=axis[0], exclusive=bool(n.attr("exclusive", 0)),
                  reverse=bool(n.attr("reverse", 0)), out=0)


@handles("CumProd")
def _cumprod(n: NodeCtx) -> Value:
    """Cumulative product from cumulative sums: exp(cumsum(log|x|)), with the sign from the
    running count of negatives and 0 once a zero has been seen (computed in float64)."""
    x = n.x(0)
    axis = n.ints(1, "axis")
    if not axis or len(axis) != 1:
        raise n.error(f"axis must be a scalar, got {axis}")
    kw = {"axis": axis[0], "exclusive": bool(n.attr("exclusive", 0)),
          "reverse": bool(n.attr("reverse", 0))}
    xf = n.emit(ops.cast, x, to="float64")
    zero, one = n.scalar(0, xf), n.scalar(1, xf)
    is_zero = n.emit(ops.equal, xf, zero)
    zeros = n.emit(ops.cumsum, n.emit(ops.cast, is_zero, to="int64"), **kw)
    negs = n.emit(ops.cumsum, n.emit(ops.cast, n.emit(ops.less, xf, zero), to="int64"), **kw)
    logs = n.emit(ops.log, n.emit(ops.abs_, n.emit(ops.where, is_zero, one, xf)))
    mag = n.emit(ops.exp, n.emit(ops.cumsum, logs, **kw))
    odd = n.emit(ops.equal, n.emit(ops.bitwise_and, negs, n.constant(1, "int64")),
                 n.constant(1, "int64"))
    signed = n.emit(ops.where, odd, n.emit(ops.neg, mag), mag)
    y = n.emit(ops.where, n.emit(ops.greater, zeros, n.constant(0, "int64")), zero, signed)
    if not x.dtype.is_float:
        y = n.emit(ops.round_, y)
    return n.emit(ops.cast, y, to=x.dtype, out=0)


@handles("TopK")
def _topk(n: NodeCtx) -> Any:
    """TopK with an import-time k; ``sorted=0`` may give any order, so sorted order is fine."""
    x = n.x(0)
    k = n.ints(1, "k")
    if not k or len(k) != 1 or k[0] < 0:
        raise n.error(f"TopK needs one non-negative k, got {k}")
    axis = normalize_axis(n.attr("axis", -1), x.ndim)
    return n.emit(ops.top_k, x, out=[0, 1], k=k[0], axis=axis,
                  largest=bool(n.attr("largest", 1)))
