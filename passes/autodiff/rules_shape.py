"""VJP rules of the layout ops: reshape, transpose, (un)squeeze, concat, split, slice, expand,
broadcast_like, pad and tile.

``slice`` and non-constant ``pad`` scatter the cotangent back one axis at a time with indices
computed by the forward op itself (``iota_like`` sliced the same way), so symbolic dims work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import AutodiffError
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axes, normalize_axis

from .helpers import inverse_perm, reshape_to, static_dims, zeros_like
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]
Ints = tuple[int, ...]


@VJPS.register(ops.reshape)
def _reshape_vjp(g: Value, out: Value, x: Value, *, shape: Ints) -> Grads:
    return (reshape_to(g, x),)  # d reshape(x) = reshape(dx)


@VJPS.register(ops.transpose)
def _transpose_vjp(g: Value, out: Value, x: Value, *, perm: Ints | None) -> Grads:
    # d transpose(x, p) = transpose(dx, p)  =>  x_bar = transpose(g, p^-1)
    p = tuple(range(x.ndim))[::-1] if perm is None else perm
    return (ops.transpose(g, perm=inverse_perm(p)),)


@VJPS.register(ops.squeeze)
def _squeeze_vjp(g: Value, out: Value, x: Value, *, axes: Ints | None) -> Grads:
    # squeeze drops size-1 axes: put them back
    ax = tuple(i for i, d in enumerate(x.shape) if d == 1) if axes is None \
        else normalize_axes(axes, x.ndim)
    return (ops.unsqueeze(g, axes=ax) if ax else g,)


@VJPS.register(ops.unsqueeze)
def _unsqueeze_vjp(g: Value, out: Value, x: Value, *, axes: Ints) -> Grads:
    return (ops.squeeze(g, axes=normalize_axes(axes, out.ndim)),)  # the inverse of unsqueeze


@VJPS.register(ops.concat)
def _concat_vjp(g: Value, out: Value, *xs: Value, axis: int) -> Grads:
    # d concat(x_1, ..., x_n) = concat(dx_1, ..., dx_n): cut g into the pieces
    if len(xs) == 1:
        return (g,)
    a = normalize_axis(axis, out.ndim)
    sizes = static_dims([x.shape[a] for x in xs], f"concat gradient along axis {a}")
    return tuple(ops.split(g, axis=a, split=sizes))


@VJPS.register(ops.split)
def _split_vjp(g: tuple[Value | None, ...], out: tuple[Value, ...], x: Value, *, axis: int,
               split: Ints) -> Grads:
    # the inverse of split is concat; pieces without a gradient contribute zeros
    pieces = [gi if gi is not None else zeros_like(o) for gi, o in zip(g, out, strict=True)]
    return (pieces[0] if len(pieces) == 1 else ops.concat(*pieces, axis=axis),)


@VJPS.register(ops.expand)
def _expand_vjp(g: Value, out: Value, x: Value, *, shape: Ints) -> Grads:
    return (g,)  # broadcasting: the driver sums g back to x's shape


@VJPS.register(ops.broadcast_like)
def _broadcast_like_vjp(g: Value, out: Value, x: Value, like: Value) -> Grads:
    return (g, None)  # broadcasting: the driver sums g back; like only gives the shape


def _scatter_axes(g: Value, axes: Sequence[int], data_of: Callable[[list[int]], Value],
                  index_of: Callable[[int, list[int], Value], Value]) -> Value:
    """Scatter-add ``g`` back into zeros of the forward input's shape one axis at a time.

    ``data_of(rest)`` gives zeros whose axes ``rest`` still have the forward output's size and
    the others the input's size; ``index_of(a, rest, cur)`` gives, for each element of the
    partial cotangent ``cur`` (output size on ``a`` and ``rest``), the input position along
    ``a`` it came from.
    """
    cur = g
    todo = list(axes)
    while todo:
        a = todo.pop(0)
        idx = index_of(a, [a, *todo], cur)
        cur = ops.scatter_elements(data_of(todo), idx, cur, axis=a, reduction="add")
    return cur


@VJPS.register(ops.slice_)
def _slice_vjp(g: Value, out: Value, x: Value, *, starts: Ints, ends: Ints, axes: Ints | None,
               steps: Ints | None) -> Grads:
    # y = x[s:e:k]: x_bar = zeros with g written back at the sliced positions
    ax = tuple(range(len(starts))) if axes is None else tuple(axes)
    st = (1,) * len(starts) if steps is None else tuple(steps)
    spec = {normalize_axis(a, x.ndim): (s, e, k) for s, e, a, k in zip(starts, ends, ax, st,
                                                                        strict=True)}
    spec = {a: v for a, v in spec.items() if x.shape[a] != out.shape[a] or v[2] != 1}
    if all(isinstance(x.shape[a], int) and k == 1 for a, (_, _, k) in spec.items()):
        pads = [0] * (2 * x.ndim)  # unit steps on static dims: pad g with zeros
        for a, (s, e, _) in spec.items():
            r = range(int(x.shape[a]))[slice(s, e)]
            pads[a], pads[a + x.ndim] = r.start, int(x.shape[a]) - max(r.stop, r.start)
        return (ops.pad(g, pads=pads) if any(pads) else g,)

    def sliced(v: Value, rest: list[int]) -> Value:
        if not rest:
            return v
        out: Value = ops.slice_(v, starts=[spec[a][0] for a in rest],
                                ends=[spec[a][1] for a in rest], axes=list(rest),
                                steps=[spec[a][2] for a in rest])
        return out

    zeros = zeros_like(x)
    return (_scatter_axes(g, sorted(spec), lambda rest: sliced(zeros, rest),
                          lambda a, rest, _: sliced(ops.iota_like(x, axis=a), rest)),)


@VJPS.register(ops.pad)
def _pad_vjp(g: Value, out: Value, x: Value, *, pads: Ints, mode: str, value: float) -> Grads:
    # constant: x_bar = g without the border; reflect/edge: border entries add to their source
    n = x.ndim
    padded = [a for a in range(n) if pads[a] or pads[a + n]]
    if mode == "constant":
        crop = [max(-p, 0) for p in pads]  # negative pads cropped x: pad g back with zeros
        gx = ops.pad(g, pads=crop) if any(crop) else g
        sl = [a for a in padded if pads[a] > 0 or pads[a + n] > 0]
        if not sl:
            return (gx,)
        static_dims([x.shape[a] for a in sl], "pad gradient on padded axes")
        return (ops.slice_(gx, starts=[max(pads[a], 0) for a in sl],
                           ends=[max(pads[a], 0) + int(x.shape[a]) for a in sl], axes=sl),)
    if any(p < 0 for p in pads):
        raise AutodiffError(f"pad mode {mode!r} with negative pads {pads} has no gradient rule")
    dims = static_dims([x.shape[a] for a in padded], f"{mode} pad gradient on padded axes")
    size = dict(zip(padded, dims, strict=True))
    np_mode: Literal["reflect", "edge"] = "reflect" if mode == "reflect" else "edge"

    zeros = zeros_like(x)

    def data_of(rest: list[int]) -> Value:
        p = [pads[i] if i % n in rest else 0 for i in range(2 * n)]
        if not any(p):
            return zeros
        out: Value = ops.pad(zeros, pads=p)
        return out

    def index_of(a: int, rest: list[int], cur: Value) -> Value:
        src = np.pad(np.arange(size[a], dtype=np.int64), (pads[a], pads[a + n]), mode=np_mode)
        idx = ops.constant(value=src.reshape([-1 if i == a else 1 for i in range(n)]))
        out: Value = ops.broadcast_like(idx, cur)
        return out

    return (_scatter_axes(g, padded, data_of, index_of),)


@VJPS.register(ops.tile)
def _tile_vjp(g: Value, out: Value, x: Value, *, repeats: Ints) -> Grads:
    # y = tile(x): every copy's cotangent adds up, x_bar = sum over the copies
    if all(r == 1 for r in repeats):
        return (g,)
    target: list[int] = []
    copy_axes: list[int] = []
    for i, (d, r) in enumerate(zip(x.shape, repeats, strict=True)):
        if r != 1:
            copy_axes.append(len(target))
            target.append(r)
        target.append(d if isinstance(d, int) else (0 if len(target) == i else -1))
    if any(not isinstance(d, int) for d, r in zip(x.shape, repeats, strict=True) if r != 1) \
            or target.count(-1) > 1:
        raise AutodiffError(f"tile gradient needs static dims on tiled axes, got {x.type}")
    split = ops.reshape(g, shape=target)
    return (ops.reduce_sum(split, axes=copy_axes, keepdims=False),)


# both are permutations of the elements, so each one's adjoint is the other
@VJPS.register(ops.space_to_depth)
def _space_to_depth_vjp(g: Value, out: Value, x: Value, *, blocksize: int) -> Grads:
    return (ops.depth_to_space(g, blocksize=blocksize),)


@VJPS.register(ops.depth_to_space)
def _depth_to_space_vjp(g: Value, out: Value, x: Value, *, blocksize: int) -> Grads:
    return (ops.space_to_depth(g, blocksize=blocksize),)
