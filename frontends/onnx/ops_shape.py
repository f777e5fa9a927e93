"""ONNX shape, layout, indexing and constant-producing ops.

Operands that our ops take as attributes (Reshape's shape, Slice's starts, Pad's pads, ...)
must be known at import time; constant-producing ops (Constant, Shape of static tensors) usually
fold away before reaching these handlers. Reshape, Expand, Slice, Range, ConstantOfShape, Shape
and Size, whose operands may depend on symbolic dims, are in :mod:`.ops_dynamic`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dimexpr import dim_prod
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axis

from .context import NodeCtx, handles
from .loader import onnx_dtype
from .ops_dynamic import materialize

INT_MAX = 2**63 - 1


def constant_value(n: NodeCtx) -> np.ndarray:
    """The tensor of a Constant node (any of its attribute forms)."""
    a = n.attrs
    if "value" in a:
        return np.asarray(a["value"])
    if "value_float" in a:
        return np.asarray(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.asarray(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.asarray(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.asarray(a["value_ints"], dtype=np.int64)
    if "sparse_value" in a:
        raise n.unsupported("sparse Constant")
    if "value_string" in a or "value_strings" in a:
        raise n.unsupported("string Constant")
    raise n.error("Constant without a value attribute")


@handles("Constant")
def _constant(n: NodeCtx) -> Value:
    return n.emit(ops.constant, value=constant_value(n), out=0)


@handles("Flatten")
def _flatten(n: NodeCtx) -> Value:
    x = n.x(0)
    axis = n.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    head, tail = x.shape[:axis], x.shape[axis:]
    if all(isinstance(d, int) for d in head):
        shape = (math.prod(head), -1)
    elif all(isinstance(d, int) for d in tail):
        shape = (-1, math.prod(tail))
    elif axis == 1:
        shape = (0, -1)
    else:
        raise n.unsupported(f"Flatten(axis={axis}) of {x.type} with symbolic dims on both sides")
    if shape == (0, -1) and x.ndim == 0:
        shape = (1, 1)
    return n.emit(ops.reshape, x, shape=shape, out=0)


@handles("Transpose")
def _transpose(n: NodeCtx) -> Value:
    perm = n.attr("perm")
    return n.emit(ops.transpose, n.x(0), perm=tuple(perm) if perm is not None else None, out=0)


@handles("Squeeze")
def _squeeze(n: NodeCtx) -> Value:
    axes = n.axes(1)
    return n.emit(ops.squeeze, n.x(0), axes=tuple(axes) if axes is not None else None, out=0)


@handles("Unsqueeze")
def _unsqueeze(n: NodeCtx) -> Value:
    axes = n.axes(1)
    if axes is None:
        raise n.error("Unsqueeze needs axes")
    return n.emit(ops.unsqueeze, n.x(0), axes=tuple(axes), out=0)


@handles("Concat")
def _concat(n: NodeCtx) -> Value:
    return n.emit(ops.concat, *n.inputs(), axis=n.attr("axis"), out=0)


@handles("Split")
def _split(n: NodeCtx) -> Any:
    x = n.x(0)
    axis = normalize_axis(n.attr("axis", 0), x.ndim)
    sizes = n.ints(1, "split") if n.has(1) else n.attr("split")
    if sizes is None:
        dim = x.shape[axis]
        if not isinstance(dim, int):
            raise n.unsupported(f"Split of symbolic dim {dim} without split sizes")
        num = n.attr("num_outputs") or len(n.outs)
        if "num_outputs" in n.attrs:
            chunk = math.ceil(dim / num)
            sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(num)]
        elif dim % num:
            raise n.error(f"dim {dim} cannot be split evenly into {num} outputs")
        else:
            sizes = [dim // num] * num
    outs = n.emit(ops.split, x, axis=axis, split=tuple(sizes), out=list(range(len(sizes))))
    return outs if isinstance(outs, tuple) else (outs,)


@handles("Gather")
def _gather(n: NodeCtx) -> Value:
    return n.emit(ops.gather, n.x(0), n.x(1), axis=n.attr("axis", 0), out=0)


@handles("GatherElements")
def _gather_elements(n: NodeCtx) -> Value:
    return n.emit(ops.gather_elements, n.x(0), n.x(1), axis=n.attr("axis", 0), out=0)


@handles("ScatterElements", "Scatter")
def _scatter_elements(n: NodeCtx) -> Value:
    return n.emit(ops.scatter_elements, n.x(0), n.x(1), n.x(2), axis=n.attr("axis", 0),
                  reduction=n.attr("reduction", "none"), out=0)


@handles("ScatterND")
def _scatter_nd(n: NodeCtx) -> Value:
    return n.emit(ops.scatter_nd, n.x(0), n.x(1), n.x(2),
                  reduction=n.attr("reduction", "none"), out=0)


@handles("GatherND")
def _gather_nd(n: NodeCtx) -> Value:
    data, idx = n.x(0), n.x(1)
    if n.attr("batch_dims", 0):
        raise n.unsupported("GatherND with batch_dims > 0")
    k = idx.shape[-1] if idx.ndim else None
    if not isinstance(k, int) or k > data.ndim:
        raise n.error(f"last dim of indices {idx.type} must be a static int <= rank of data")
    dims = list(data.shape[:k])
    strides = [dim_prod(dims[i + 1:]) for i in range(k)]
    rest = list(data.shape[k:])
    if all(isinstance(d, int) for d in [*dims, *strides]):
        dims_v = n.constant(dims, idx.dtype)
        strides_v = n.constant(strides, idx.dtype)
    else:  # symbolic leading dims: the strides are computed at run time
        dims_v = materialize(n, np.asarray(dims, dtype=object), idx.dtype.numpy)
        strides_v = materialize(n, np.asarray(strides, dtype=object), idx.dtype.numpy)
    neg = n.emit(ops.less, idx, n.scalar(0, idx))
    fixed = n.emit(ops.where, neg, n.emit(ops.add, idx, dims_v), idx)
    flat = n.emit(ops.reduce_sum, n.emit(ops.mul, fixed, strides_v), axes=(-1,), keepdims=False)
    lead = dim_prod(dims)
    target = [d if isinstance(d, int) else -1 for d in rest]
    if isinstance(lead, int) and target.count(-1) <= 1:
        table = n.emit(ops.reshape, data, shape=(lead, *target))
    else:
        shape = np.asarray([lead, *rest], dtype=object)
        table = n.emit(ops.dynamic_reshape, data, materialize(n, shape), dims=(lead, *rest),
                       allowzero=False)
    return n.emit(ops.gather, table, flat, axis=0, out=0)


@handles("Tile")
def _tile(n: NodeCtx) -> Value:
    return n.emit(ops.tile, n.x(0), repeats=n.ints(1, "repeats"), out=0)


@handles("Pad")
def _pad(n: NodeCtx) -> Value:
    x = n.x(0)
    r = x.ndim
    pads = n.ints(1, "pads") if n.has(1) else n.attr("pads")
    mode = n.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise n.unsupported(f"Pad mode {mode}")
    value = n.scalar_const(2, "constant_value") if n.has(2) else n.attr("value", 0.0)
    axes = n.ints(3, "axes")
    if pads is None:
        raise n.error("Pad needs pads")
    if axes is not None:
        full = [0] * (2 * r)
        for j, a in enumerate(axes):
            a = normalize_axis(a, r)
            full[a], full[a + r] = pads[j], pads[j + len(axes)]
        pads = full
    if any(p < 0 for p in pads):
        starts = [max(-p, 0) for p in pads[:r]]
        ends = [-p if p < 0 else INT_MAX for p in pads[r:]]
        x = n.emit(ops.slice_, x, starts=starts, ends=ends, axes=list(range(r)), steps=None)
        pads = [max(p, 0) for p in pads]
    return n.emit(ops.pad, x, pads=pads, mode=mode, value=value or 0.0, out=0)


@handles("EyeLike")
def _eye_like(n: NodeCtx) -> Value:
    x = n.x(0)
    if x.ndim != 2:
        raise n.error(f"EyeLike takes a 2-D input, got {x.type}")
    rows, cols = n.static_shape(x, "EyeLike")
    dt = onnx_dtype(n.attr("dtype"), "EyeLike dtype") if "dtype" in n.attrs else x.dtype
    return n.constant(np.eye(rows, cols, n.attr("k", 0)).astype(dt.numpy), dt)


@handles("Trilu")
def _trilu(n: NodeCtx) -> Value:
    x = n.x(0)
    if x.ndim < 2:
        raise n.error(f"Trilu takes an input of rank >= 2, got {x.type}")
    rows, cols = x.shape[-2:]
    if not isinstance(rows, int) or not isinstance(cols, int):
        raise n.unsupported(f"Trilu needs static last two dims, got {x.type}")
    k = n.ints(1, "k")  # None when absent
    k0 = 0 if k is None else k[0]
    ones = np.ones((rows, cols), dtype=bool)
    mask = np.triu(ones, k0) if n.attr("upper", 1) else np.tril(ones, k0)
    return n.emit(ops.where, n.constant(mask), x, n.scalar(0, x), out=0)


@handles("OneHot")
def _one_hot(n: NodeCtx) -> Value:
    idx, values = n.x(0), n.x(2)
    depth = n.scalar_const(1, "depth")
    assert depth is not None
    d = int(depth)
    axis = n.attr("axis", -1)
    axis = normalize_axis(axis, idx.ndim + 1)
    if not idx.dtype.is_integer:
        idx = n.emit(ops.cast, idx, to="int64")
    neg = n.emit(ops.less, idx, n.scalar(0, idx))
    idx = n.emit(ops.where, neg, n.emit(ops.add, idx, n.scalar(d, idx)), idx)
    idx = n.emit(ops.unsqueeze, idx, axes=(axis,))
    pos = np.arange(d, dtype=idx.dtype.numpy).reshape([d] + [1] * (idx.ndim - 1 - axis))
    hit = n.emit(ops.equal, idx, n.constant(pos, idx.dtype))
    off = n.emit(ops.gather, values, n.constant(0, "int64"), axis=0)
    on = n.emit(ops.gather, values, n.constant(1, "int64"), axis=0)
    return n.emit(ops.where, hit, on, off, out=0)


@handles("DepthToSpace", "SpaceToDepth")
def _depth_space(n: NodeCtx) -> Value:
    x = n.x(0)
    b = int(n.attr("blocksize"))
    if x.ndim != 4 or b < 1:
        raise n.error(f"{n.op_type} takes a 4-D (N, C, H, W) input and blocksize >= 1, got "
                      f"{x.type} and blocksize {b}")
    _, c, h, w = x.shape
    if not all(isinstance(d, int) for d in (c, h, w)):
        raise n.unsupported(f"{n.op_type} needs static C, H, W, got {x.type}")
    crd = n.attr("mode", "DCR") == "CRD"  # channels before block offsets
    if n.op_type == "SpaceToDepth" and not crd:
        return n.emit(ops.space_to_depth, x, blocksize=b, out=0)
    if n.op_type == "SpaceToDepth":
        t = n.emit(ops.reshape, x, shape=(0, c, h // b, b, w // b, b))
        t = n.emit(ops.transpose, t, perm=(0, 1, 3, 5, 2, 4))
        return n.emit(ops.reshape, t, shape=(0, c * b * b, h // b, w // b), out=0)
    if not crd:
        return n.emit(ops.depth_to_space, x, blocksize=b, out=0)
    t = n.emit(ops.reshape, x, shape=(0, c // (b * b), b, b, h, w))
    t = n.emit(ops.transpose, t, perm=(0, 1, 4, 2, 5, 3))
    return n.emit(ops.reshape, t, shape=(0, c // (b * b), h * b, w * b), out=0)


@handles("ReverseSequence")
def _reverse_sequence(n: NodeCtx) -> Value:
    """Reverse the first seq_len[b] steps of every batch entry with a constant gather."""
    x = n.x(0)
    shape = n.static_shape(x, "ReverseSequence")
    lens = n.ints(1, "sequence_lens")
    assert lens is not None
    t_axis, b_axis = n.attr("time_axis", 0), n.attr("batch_axis", 1)
    t = np.arange(shape[t_axis]).reshape(-1, 1)
    ln = np.asarray(lens).reshape(1, -1)
    idx = np.where(t < ln, ln - 1 - t, t)  # (T, B)
    if t_axis > b_axis:
        idx = idx.T
    idx = idx.reshape(idx.shape + (1,) * (len(shape) - 2))
    return n.emit(ops.gather_elements, x, n.constant(np.broadcast_to(idx, shape), "int64"),
                  axis=t_axis, out=0)
