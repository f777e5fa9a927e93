"""VJP rules of the indexing ops: gather, gather_elements, scatter_elements, scatter_nd.

Gathers scatter-add their cotangent back (repeated indices accumulate); scatters gather it.
With ``reduction='none'`` and repeated indices only the last write (the one the kernel keeps)
gets a gradient; ``max``/``min`` split it among ties; ``mul`` divides by the updates (nonzero
updates assumed). Indices are never differentiated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import AutodiffError
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axis

from .helpers import inverse_perm, ones_like, reshape_to, scalar, static_dims, zeros_like
from .table import VJPS

__all__ = ["gather_nd"]

Grads = tuple[Value | None, ...]


def _nonneg(idx: Value, dims: list[int | str]) -> Value:
    """Negative indices made positive where the indexed dims are static (for ONNX ScatterND)."""
    if not all(isinstance(d, int) for d in dims):
        return idx
    shape = np.asarray(dims if len(dims) > 1 else dims[0], dtype=idx.dtype.numpy)
    zero = ops.constant(value=np.zeros((), dtype=idx.dtype.numpy))
    out: Value = ops.where(ops.less(idx, zero), ops.add(idx, ops.constant(value=shape)), idx)
    return out


def gather_nd(data: Value, idx: Value) -> Value:
    """ONNX GatherND (batch_dims=0) from gather: rows ``data[idx[..., :]]``.

    The last dim k of ``idx`` indexes the first k axes of ``data``; for k > 1 those axes are
    flattened (they must be static) and ``idx`` is linearised.
    """
    k = idx.shape[-1]
    if not isinstance(k, int):
        raise AutodiffError(f"gather_nd needs a static last index dim, got {idx.type}")
    if k == 0:  # every index tuple selects the whole tensor
        batch = idx.shape[:-1]
        whole: Value = ops.unsqueeze(data, axes=tuple(range(len(batch)))) if batch else data
        if all(d == 1 for d in batch):
            return whole
        reps = static_dims(batch, "gather_nd with an empty index")
        expanded: Value = ops.expand(whole, shape=(*reps, *[1] * data.ndim))
        return expanded
    if k == 1:
        rows: Value = ops.gather(data, ops.squeeze(idx, axes=(-1,)), axis=0)
        return rows
    lead = data.shape[:k]
    if not all(isinstance(d, int) for d in lead):
        raise AutodiffError(f"gather_nd over {k} axes needs them static, got {data.type}")
    strides = np.cumprod([1, *lead[::-1]])[:-1][::-1].astype(idx.dtype.numpy)
    flat_idx = ops.reduce_sum(ops.mul(_nonneg(idx, list(lead)), ops.constant(value=strides)),
                              axes=(-1,), keepdims=False)
    rest = data.shape[k:]
    if sum(not isinstance(d, int) for d in rest) > 1:
        raise AutodiffError(f"gather_nd cannot flatten {data.type}: too many symbolic dims")
    target = [int(np.prod(lead))] + [d if isinstance(d, int) else -1 for d in rest]
    out: Value = ops.gather(ops.reshape(data, shape=target), flat_idx, axis=0)
    return out


@VJPS.register(ops.gather)
def _gather_vjp(g: Value, out: Value, data: Value, indices: Value, *, axis: int) -> Grads:
    # y = data[..., idx, ...] along axis: data_bar[..., idx, ...] += g (scatter_nd with add)
    a = normalize_axis(axis, data.ndim)
    r = indices.ndim
    zeros = zeros_like(data)
    to_front = (a, *range(a), *range(a + 1, data.ndim))  # indexed axis first, as ScatterND wants
    if a:
        zeros = ops.transpose(zeros, perm=to_front)
        g = ops.transpose(g, perm=(*range(a, a + r), *range(a), *range(a + r, g.ndim)))
    idx = ops.unsqueeze(_nonneg(indices, [data.shape[a]]), axes=(r,))
    grad = ops.scatter_nd(zeros, idx, g, reduction="add")
    return (ops.transpose(grad, perm=inverse_perm(to_front)) if a else grad, None)


@VJPS.register(ops.gather_elements)
def _gather_elements_vjp(g: Value, out: Value, data: Value, indices: Value, *,
                         axis: int) -> Grads:
    # y[i] = data[idx[i]] along axis: data_bar[idx[i]] += g[i]
    grad = ops.scatter_elements(zeros_like(data), indices, g, axis=axis, reduction="add")
    return (grad, None)


Scatter = Callable[[Value, Value, str], Value]  # (data, updates, reduction) -> result


def _scatter_vjp(g: Value, out: Value, data: Value, updates: Value, reduction: str,
                 scatter: Scatter, gather: Callable[[Value], Value]) -> tuple[Value, Value]:
    """Cotangents of (data, updates) for a scatter with the given index map built in."""
    if reduction == "add":  # y_p = data_p + sum_{i -> p} u_i
        return g, gather(g)
    if reduction == "none":  # y_p = u_i for the last i -> p: only the winning write gets g
        pos = ops.iota_like(updates)
        writer = scatter(ops.full_like(data, value=-1.0, dtype="int64"), pos, "none")
        won = ops.equal(gather(writer), pos)
        return scatter(g, zeros_like(updates), "none"), ops.where(won, gather(g),
                                                                   scalar(0.0, g))
    if reduction == "mul":  # y_p = data_p prod_{i -> p} u_i  (u_i != 0 assumed)
        hits = scatter(ones_like(data), updates, "mul")
        return ops.mul(g, hits), ops.div(gather(ops.mul(g, out)), updates)
    # max/min: y_p is one of data_p, u_i; g goes to the elements equal to y_p, split among ties
    dt = g.dtype
    d_hit = ops.cast(ops.equal(data, out), to=dt)
    u_hit = ops.cast(ops.equal(updates, gather(out)), to=dt)
    share = ops.div(g, scatter(d_hit, u_hit, "add"))
    return ops.mul(share, d_hit), ops.mul(gather(share), u_hit)


@VJPS.register(ops.scatter_elements)
def _scatter_elements_vjp(g: Value, out: Value, data: Value, indices: Value, updates: Value, *,
                          axis: int, reduction: str) -> Grads:
    # y = data with updates at idx: data_bar = g where data survives, updates_bar = g[idx]
    def scatter(d: Value, u: Value, red: str) -> Value:
        out: Value = ops.scatter_elements(d, indices, u, axis=axis, reduction=red)
        return out

    def gather(v: Value) -> Value:
        out: Value = ops.gather_elements(v, indices, axis=axis)
        return out

    g_data, g_upd = _scatter_vjp(g, out, data, updates, reduction, scatter, gather)
    return (g_data, None, g_upd)


@VJPS.register(ops.scatter_nd)
def _scatter_nd_vjp(g: Value, out: Value, data: Value, indices: Value, updates: Value, *,
                    reduction: str) -> Grads:
    # y = data with update rows at idx: data_bar = g where data survives, updates_bar = g[idx]
    def scatter(d: Value, u: Value, red: str) -> Value:
        out: Value = ops.scatter_nd(d, indices, u, reduction=red)
        return out

    g_data, g_upd = _scatter_vjp(g, out, data, updates, reduction, scatter,
                                 lambda v: gather_nd(v, indices))
    return (g_data, None, g_upd)


@VJPS.register(ops.max_unpool)
def _max_unpool_vjp(g: Value, out: Value, x: Value, indices: Value, like: Value, *,
                    kernel_shape: tuple[int, ...], strides: tuple[int, ...] | None,
                    pads: tuple[int, ...] | None) -> Grads:
    # y.flat[idx] = x: x_bar = g.flat[idx] (a flat gather); like only gives the shape
    flat = (-1,)
    gx = ops.gather_elements(ops.reshape(g, shape=flat), ops.reshape(indices, shape=flat), axis=0)
    return (reshape_to(gx, x), None, None)
