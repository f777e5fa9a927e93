"""VJP rules of the reductions, softmax, log_softmax and cumsum.

``reduce_max``/``reduce_min`` split the cotangent evenly among tied extrema (torch.amax);
``reduce_prod`` uses ``prod / x`` and so assumes no zero in the reduced input; ``top_k``
scatters the cotangent of its values back to the positions it picked.
"""

from __future__ import annotations

from collections.abc import Sequence

from lbdl_graph import ops
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axes

from .helpers import keep_reduced, numel_static, ones_like, scalar, unreduce, zeros_like
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]
Axes = Sequence[int] | None


@VJPS.register(ops.reduce_sum)
def _reduce_sum_vjp(g: Value, out: Value, x: Value, *, axes: Axes, keepdims: bool) -> Grads:
    return (unreduce(g, x, axes, keepdims),)  # d sum(x) = sum(dx)


@VJPS.register(ops.reduce_mean)
def _reduce_mean_vjp(g: Value, out: Value, x: Value, *, axes: Axes, keepdims: bool) -> Grads:
    # d mean(x) = sum(dx) / count
    ax = normalize_axes(axes, x.ndim)
    gk = keep_reduced(g, x, axes, keepdims)
    count = numel_static([x.shape[a] for a in ax])
    if count is not None:
        gk = ops.mul(gk, scalar(1.0 / max(count, 1), g))
    else:
        gk = ops.div(gk, ops.reduce_sum(ones_like(x), axes=ax, keepdims=True))
    return (unreduce(gk, x, ax, True),)


def _extremum_vjp(g: Value, out: Value, x: Value, axes: Axes, keepdims: bool) -> Grads:
    """Send ``g`` to the elements equal to the extremum, split evenly among ties."""
    ax = normalize_axes(axes, x.ndim)
    hit = ops.cast(ops.equal(x, keep_reduced(out, x, axes, keepdims)), to=x.dtype)
    share = ops.div(keep_reduced(g, x, axes, keepdims),
                    ops.reduce_sum(hit, axes=ax, keepdims=True))
    return (ops.mul(hit, share),)


@VJPS.register(ops.reduce_max)
def _reduce_max_vjp(g: Value, out: Value, x: Value, *, axes: Axes, keepdims: bool) -> Grads:
    return _extremum_vjp(g, out, x, axes, keepdims)  # d max(x) = dx[argmax]


@VJPS.register(ops.reduce_min)
def _reduce_min_vjp(g: Value, out: Value, x: Value, *, axes: Axes, keepdims: bool) -> Grads:
    return _extremum_vjp(g, out, x, axes, keepdims)  # d min(x) = dx[argmin]


@VJPS.register(ops.reduce_prod)
def _reduce_prod_vjp(g: Value, out: Value, x: Value, *, axes: Axes, keepdims: bool) -> Grads:
    # d prod(x) = sum(prod(x) / x_i dx_i)
    gp = ops.mul(keep_reduced(g, x, axes, keepdims), keep_reduced(out, x, axes, keepdims))
    return (ops.div(gp, x),)


@VJPS.register(ops.softmax)
def _softmax_vjp(g: Value, out: Value, x: Value, *, axis: int) -> Grads:
    # d softmax(x) = y * (dx - sum(y dx))  =>  x_bar = y * (g - sum(g y))
    dot = ops.reduce_sum(ops.mul(g, out), axes=(axis,), keepdims=True)
    return (ops.mul(out, ops.sub(g, dot)),)


@VJPS.register(ops.log_softmax)
def _log_softmax_vjp(g: Value, out: Value, x: Value, *, axis: int) -> Grads:
    # d log_softmax(x) = dx - softmax(x) sum(dx)  =>  x_bar = g - exp(y) sum(g)
    total = ops.reduce_sum(g, axes=(axis,), keepdims=True)
    return (ops.sub(g, ops.mul(ops.exp(out), total)),)


@VJPS.register(ops.cumsum)
def _cumsum_vjp(g: Value, out: Value, x: Value, *, axis: int, exclusive: bool,
                reverse: bool) -> Grads:
    # y_i = sum_{j <= i} x_j  =>  x_bar_j = sum_{i >= j} g_i: the cumsum in the other direction
    return (ops.cumsum(g, axis=axis, exclusive=exclusive, reverse=not reverse),)


@VJPS.register(ops.top_k)
def _top_k_vjp(g: tuple[Value | None, ...], out: tuple[Value, ...], x: Value, *, k: int,
               axis: int, largest: bool) -> Grads:
    # values = x[idx] along axis: x_bar[idx] += g (the indices are distinct)
    if g[0] is None:
        return (None,)
    return (ops.scatter_elements(zeros_like(x), out[1], g[0], axis=axis, reduction="add"),)
