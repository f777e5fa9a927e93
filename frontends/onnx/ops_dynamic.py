"""ONNX ops whose shape operands depend on symbolic dims: Reshape, Expand, Slice, Range,
ConstantOfShape, Shape and Size.

Shape values with symbolic dims travel through the import as object arrays of ints and dim
expressions (``imp.symbolic``; see :func:`.fold.fold_symbolic`). A handler first tries to turn
such an operand into attributes (a symbolic dim equal to the input's dim at the same axis is a
reshape 0, one other becomes -1, a slice end equal to the axis length is "to the end"); where
it cannot, the shape becomes a run-time int64 tensor (:func:`materialize`, built from
``shape_of`` of a tensor that has each dim) and the op one of the IR's ``dynamic_*`` ops, whose
``dims`` attribute keeps the output type exact.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dimexpr import canonical, dim_add, dim_div, dim_prod, dim_sub, dims_equal
from lbdl_graph.errors import LbdlError
from lbdl_graph.graph import Value
from lbdl_graph.shapes import Dim, normalize_axis

from .context import NodeCtx, handles
from .loader import numpy_dtype_of

INT_MAX = 2**63 - 1
_BIG = 2**62  # slice bounds at least this large mean "to the end"

__all__ = ["materialize"]


def _dim_vector(n: NodeCtx, d: Dim) -> Value:
    """A [1] int64 tensor holding the run-time value of dim ``d``."""
    imp = n.imp
    key = canonical(d)
    got = imp.dim_tensors.get(key)
    if got is not None:
        return got
    if isinstance(key, int):
        v = n.constant(np.asarray([key], dtype=np.int64))
    else:
        src = imp.dim_source(d) if isinstance(d, str) else None
        src = src or imp.dim_source(key)
        if src is not None:
            t, axis = src
            v = n.emit(ops.shape_of, t, start=axis, end=axis + 1)
        else:
            v = _dim_from_ast(n, key, ast.parse(key, mode="eval").body)
    imp.dim_tensors[key] = v
    return v


def _dim_from_ast(n: NodeCtx, text: str, node: ast.AST) -> Value:
    if isinstance(node, ast.Name):
        if n.imp.dim_source(node.id) is None:
            raise n.unsupported(f"no tensor has the symbolic dim {node.id!r} (needed for {text!r})")
        return _dim_vector(n, node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return _dim_vector(n, int(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return n.emit(ops.neg, _dim_from_ast(n, text, node.operand))
    if isinstance(node, ast.BinOp):
        fn = {ast.Add: ops.add, ast.Sub: ops.sub, ast.Mult: ops.mul, ast.FloorDiv: ops.div}.get(
            type(node.op))
        if fn is not None:
            a, b = _dim_from_ast(n, text, node.left), _dim_from_ast(n, text, node.right)
            return n.emit(fn, a, b)
    raise n.unsupported(f"cannot compute the dim expression {text!r} at run time")


def materialize(n: NodeCtx, arr: Any, dt: Any = np.int64) -> Value:
    """A run-time tensor with the values of a shape value (ints and symbolic dims)."""
    a = np.asarray(arr, dtype=object)
    flat = list(a.reshape(-1))
    if not flat:
        return n.constant(np.zeros(a.shape, dtype=dt))
    parts = [_dim_vector(n, d) for d in flat]
    v = parts[0] if len(parts) == 1 else n.emit(ops.concat, *parts, axis=0)
    if a.ndim != 1:
        v = n.emit(ops.reshape, v, shape=list(a.shape))
    if np.dtype(dt) != np.int64:
        v = n.emit(ops.cast, v, to=numpy_dtype_of(np.zeros(0, dt), "shape value"))
    return v


def _operand(n: NodeCtx, i: int, what: str) -> list[Dim] | None:
    """A shape operand as a list of ints and canonical dims (None if absent)."""
    sym = n.symbolic(i)
    if sym is not None:
        return [canonical(d) for d in sym]
    vals = n.ints(i, what)
    return None if vals is None else list(vals)


# ---- Reshape ----
def _reshape_dims(n: NodeCtx, src: Sequence[Dim], target: Sequence[Dim],
                  allowzero: bool) -> tuple[Dim, ...]:
    out: list[Dim | None] = []
    for k, t in enumerate(target):
        if t == 0 and not allowzero:
            if k >= len(src):
                raise n.error(f"reshape target {list(target)}: 0 at axis {k} has no input dim")
            out.append(canonical(src[k]))
        elif t == -1:
            out.append(None)
        elif isinstance(t, int) and t < 0:
            raise n.error(f"invalid reshape target {list(target)}")
        else:
            out.append(t)
    if out.count(None) > 1:
        raise n.error(f"reshape target {list(target)} has more than one -1")
    if None in out:
        known = [d for d in out if d is not None]
        out[out.index(None)] = dim_div(dim_prod(src), dim_prod(known))
    return tuple(d for d in out if d is not None)


def _static_target(src: Sequence[Dim], dims: Sequence[Dim]) -> list[int] | None:
    """The IR reshape attribute for ``dims`` (0 copies, one -1), or None."""
    out: list[int] = []
    for k, d in enumerate(dims):
        if isinstance(d, int):
            if d == 0:
                return None  # IR reshape's 0 copies; an empty dim needs the run-time form
            out.append(d)
        elif k < len(src) and dims_equal(src[k], d):
            out.append(0)
        else:
            out.append(-1)
    return out if out.count(-1) <= 1 else None


@handles("Reshape")
def _reshape(n: NodeCtx) -> Value:
    x = n.x(0)
    allowzero = bool(n.attr("allowzero", 0))
    target = _operand(n, 1, "shape")
    if target is None:
        raise n.error("Reshape needs a shape input")
    if n.symbolic(1) is None and not (allowzero and 0 in target):
        return n.emit(ops.reshape, x, shape=target, out=0)
    dims = _reshape_dims(n, x.shape, target, allowzero)
    static = _static_target(x.shape, dims)
    if static is not None:
        try:
            return n.emit(ops.reshape, x, shape=static, out=0)
        except LbdlError:
            pass  # the IR cannot prove the element counts equal: keep the run-time shape
    return n.emit(ops.dynamic_reshape, x, materialize(n, target), dims=dims,
                  allowzero=allowzero, out=0)


# ---- Expand, ConstantOfShape ----
def _broadcast_dims(n: NodeCtx, src: Sequence[Dim], target: Sequence[Dim]) -> tuple[Dim, ...]:
    r = max(len(src), len(target))
    a = [1] * (r - len(src)) + [canonical(d) for d in src]
    b = [1] * (r - len(target)) + list(target)
    out: list[Dim] = []
    for da, db in zip(a, b, strict=True):
        if isinstance(db, int) and isinstance(da, int) and 1 not in (da, db) and da != db:
            raise n.error(f"Expand: shape {list(target)} cannot broadcast with {list(src)}")
        out.append(db if da == 1 else da)
    return tuple(out)


@handles("Expand")
def _expand(n: NodeCtx) -> Value:
    x = n.x(0)
    target = _operand(n, 1, "shape")
    if target is None:
        raise n.error("Expand needs a shape input")
    if n.symbolic(1) is None:
        return n.emit(ops.expand, x, shape=target, out=0)
    dims = _broadcast_dims(n, x.shape, target)
    return n.emit(ops.dynamic_expand, x, materialize(n, target), dims=dims, out=0)


@handles("ConstantOfShape")
def _constant_of_shape(n: NodeCtx) -> Value:
    value = n.attr("value")
    fill = np.asarray(value).reshape(-1)[:1] if value is not None else np.zeros(1, np.float32)
    numpy_dtype_of(fill, "ConstantOfShape value")
    target = _operand(n, 0, "shape")
    if target is None:
        raise n.error("ConstantOfShape needs a shape input")
    if n.symbolic(0) is None:
        return n.constant(np.full([int(d) for d in target], fill[0], dtype=fill.dtype))
    scalar = n.constant(np.asarray(fill[0], dtype=fill.dtype))
    return n.emit(ops.dynamic_expand, scalar, materialize(n, target), dims=tuple(target), out=0)


# ---- Slice ----
def _bound(d: Dim, b: Dim, end: bool) -> Dim:
    """A slice bound on an axis of length d, clamped the way ONNX Slice clamps it (a symbolic
    bound is taken to lie inside the axis)."""
    if isinstance(b, int):
        if b >= _BIG or (isinstance(d, int) and b > d):
            return d
        if b < 0:
            return max(d + b, 0) if isinstance(d, int) else dim_add(d, b)
        return b
    return d if end and dims_equal(b, d) else b


@handles("Slice")
def _slice(n: NodeCtx) -> Value:
    x = n.x(0)
    starts, ends = _operand(n, 1, "starts"), _operand(n, 2, "ends")
    axes, steps = n.ints(3, "axes"), n.ints(4, "steps")
    if starts is None or ends is None:
        raise n.error("Slice needs starts and ends")
    ax = [normalize_axis(a, x.ndim) for a in (axes if axes is not None else range(len(starts)))]
    ks = steps if steps is not None else [1] * len(ax)
    if not len(starts) == len(ends) == len(ax) == len(ks):
        raise n.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ "
                      "in length")
    if all(isinstance(v, int) for v in [*starts, *ends]):
        return n.emit(ops.slice_, x, starts=[max(min(int(v), INT_MAX), -INT_MAX) for v in starts],
                      ends=[max(min(int(v), INT_MAX), -INT_MAX) for v in ends],
                      axes=axes, steps=steps, out=0)
    dims = list(x.shape)
    st_static: list[int] = []
    en_static: list[int] = []
    for s, e, a, k in zip(starts, ends, ax, ks, strict=True):
        if (isinstance(s, str) or isinstance(e, str)) and k != 1:
            raise n.unsupported(f"Slice with symbolic bounds and step {k}")
        lo, hi = _bound(x.shape[a], s, False), _bound(x.shape[a], e, True)
        length = dim_sub(hi, lo) if k == 1 else math.ceil((int(hi) - int(lo)) / k)
        if isinstance(length, int) and length < 0:
            length = 0
        dims[a] = canonical(length)
        st_static.append(lo if isinstance(lo, int) else -1)
        en_static.append(INT_MAX if dims_equal(hi, x.shape[a]) else hi if isinstance(hi, int)
                         else -1)
    if -1 not in st_static and -1 not in en_static:
        return n.emit(ops.slice_, x, starts=st_static, ends=en_static, axes=ax, steps=ks, out=0)
    clamp = [min(v, INT_MAX) if isinstance(v, int) else v for v in ends]
    return n.emit(ops.dynamic_slice, x, materialize(n, starts), materialize(n, clamp),
                  axes=ax, steps=ks, dims=tuple(dims), out=0)


# ---- Range, Shape, Size ----
def _scalar(n: NodeCtx, i: int, what: str) -> tuple[Dim, Any]:
    sym = n.symbolic(i)
    if sym is not None:
        if len(sym) != 1:
            raise n.error(f"Range {what} must be a scalar")
        return canonical(sym[0]), np.int64
    arr = n.const(i, what)
    if arr is None:
        raise n.error(f"Range needs {what}")
    return arr.reshape(-1)[0].item(), arr.dtype


@handles("Range")
def _range(n: NodeCtx) -> Value:
    (start, dt), (limit, _), (delta, ddt) = (_scalar(n, i, w) for i, w in
                                              enumerate(("start", "limit", "delta")))
    if not isinstance(start, str) and not isinstance(limit, str) and not isinstance(delta, str):
        return n.constant(np.arange(start, limit, delta).astype(dt))
    if not isinstance(delta, int) or delta == 0 or np.dtype(ddt).kind not in "iu":
        raise n.unsupported(f"Range with symbolic bounds and delta {delta}")
    span = dim_sub(limit, start) if delta > 0 else dim_sub(start, limit)
    step = abs(delta)
    length = span if step == 1 else dim_div(dim_add(span, step - 1), step)
    vals = [materialize(n, np.asarray(v, dtype=object), dt) for v in (start, limit, delta)]
    return n.emit(ops.dynamic_range, *vals, dims=(length,), out=0)


@handles("Shape", "Size")
def _shape(n: NodeCtx) -> Value:
    x = n.x(0)
    if n.op_type == "Size":
        return materialize(n, np.asarray(dim_prod(x.shape), dtype=object))
    r = x.ndim
    return n.emit(ops.shape_of, x, start=n.attr("start", 0),
                  end=n.attr("end", r) if n.attr("end") is not None else None, out=0)
