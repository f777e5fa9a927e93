"""Small graph-building helpers shared by the VJP rules (they run inside the gradient builder)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import current_builder
from lbdl_graph.errors import AutodiffError, ShapeError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.shapes import Dim, fmt_shape, normalize_axes

__all__ = [
    "inverse_perm",
    "keep_reduced",
    "numel_static",
    "ones_like",
    "reshape_to",
    "scalar",
    "static_dims",
    "swap_last2",
    "unreduce",
    "zeros_like",
]



def scalar(value: float, like: Value) -> Value:
    """A rank-0 constant of ``like``'s dtype (broadcasts against anything)."""
    out: Value = ops.constant(value=np.asarray(value, dtype=like.dtype.numpy))
    return out


def zeros_like(v: Value) -> Value:
    """Zeros of ``v``'s type (symbolic dims allowed)."""
    out: Value = ops.full_like(v, value=0.0)
    return out


def ones_like(v: Value) -> Value:
    """Ones of ``v``'s type (symbolic dims allowed)."""
    out: Value = ops.full_like(v, value=1.0)
    return out


def inverse_perm(perm: Sequence[int]) -> tuple[int, ...]:
    """The permutation that undoes ``perm``."""
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p % len(perm)] = i
    return tuple(inv)


def swap_last2(v: Value) -> Value:
    """``v`` with its last two axes swapped (matrix transpose of a batch)."""
    n = v.ndim
    out: Value = ops.transpose(v, perm=(*range(n - 2), n - 1, n - 2))
    return out


def keep_reduced(v: Value, x: Value, axes: Sequence[int] | None, keepdims: bool) -> Value:
    """A reduction result ``v`` with the reduced axes of ``x`` put back as size-1 axes."""
    ax = normalize_axes(axes, x.ndim)
    if keepdims or not ax:
        return v
    out: Value = ops.unsqueeze(v, axes=ax)
    return out


def unreduce(v: Value, x: Value, axes: Sequence[int] | None, keepdims: bool) -> Value:
    """Broadcast a reduction result ``v`` back to the shape of the reduced input ``x``."""
    kept = keep_reduced(v, x, axes, keepdims)
    if tuple(kept.shape) == tuple(x.shape):
        return kept
    out: Value = ops.broadcast_like(kept, x)
    return out


def static_dims(dims: Sequence[Dim], what: str) -> tuple[int, ...]:
    """``dims`` as ints; an AutodiffError says what needed them static."""
    if not all(isinstance(d, int) for d in dims):
        raise AutodiffError(f"{what} needs static dims, got {fmt_shape(dims)}")
    return tuple(int(d) for d in dims)


def reshape_to(v: Value, like: Value) -> Value:
    """Reshape ``v`` to ``like``'s shape exactly, symbolic dims included.

    A symbolic target dim is copied from ``v`` when ``v`` has it at the same axis (reshape's 0)
    and inferred (-1) otherwise. When that cannot express the shape (two dims to infer, as in
    (N*T, C) -> (N, T, C)), the elements are gathered by their flat index instead:
    ``gather(reshape(v, [-1]), iota_like(like))`` has ``like``'s shape by construction.
    """
    shape = tuple(like.shape)
    if tuple(v.shape) == shape:
        return v
    target: list[int] = []
    for i, d in enumerate(shape):
        if isinstance(d, int):
            target.append(d)
        elif i < v.ndim and v.shape[i] == d:
            target.append(0)
        else:
            target.append(-1)
    empty_ok = all(d != 0 or (i < v.ndim and v.shape[i] == 0) for i, d in enumerate(shape))
    if target.count(-1) <= 1 and empty_ok:
        try:
            out: Value = ops.reshape(v, shape=tuple(target))
            if tuple(out.shape) == shape:
                return out
        except ShapeError:
            pass
    flat = ops.reshape(v, shape=(-1,))
    gathered: Value = ops.gather(flat, ops.iota_like(like), axis=0)
    return gathered


def numel_static(dims: Sequence[Dim]) -> int | None:
    """Product of the dims, or None if one is symbolic."""
    ints = [d for d in dims if isinstance(d, int)]
    return math.prod(ints) if len(ints) == len(dims) else None


def inline_body(body: Graph, inputs: Sequence[Value]) -> list[Value]:
    """Emit a control-flow body's nodes on ``inputs``; returns the values of its outputs."""
    b = current_builder()
    env: dict[Value, Value] = dict(zip(body.inputs, inputs, strict=True))
    for n in body.nodes:
        outs = b.add_node(n.op, [env[v] if v is not None else None for v in n.inputs], n.attrs,
                          name=n.name, source=n.source)
        env.update(zip(n.outputs, outs, strict=True))
    return [env[v] for v in body.outputs]
