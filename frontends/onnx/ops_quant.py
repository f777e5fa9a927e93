"""ONNX QuantizeLinear / DequantizeLinear (per tensor, per axis and blocked) and Einsum."""

from __future__ import annotations

import string

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, float32, float64, int32
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axis

from .context import NodeCtx, handles
from .loader import onnx_dtype
from .ops_elementwise import FLOAT8_MAX
from .ops_nn import explicit_pads, int_list

_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint4": (0, 15), "int4": (-8, 7)}


def _broadcast(n: NodeCtx, v: Value, x: Value, axis: int, block: int) -> Value:
    """A scale or zero point shaped to broadcast against x (per axis or blocked)."""
    if v.ndim == 0:
        return v
    if v.ndim == 1 and v.shape[0] == 1:
        return n.emit(ops.reshape, v, shape=())
    a = normalize_axis(axis, x.ndim)
    if not block:
        if v.ndim != 1:
            raise n.error(f"per-axis scale/zero point must be 1-D, got {v.type}")
        return n.emit(ops.reshape, v, shape=tuple(-1 if i == a else 1 for i in range(x.ndim)))
    dim = x.shape[a]
    if not isinstance(dim, int):
        raise n.unsupported(f"blocked quantization needs a static dim on axis {a}")
    idx = n.constant(np.arange(dim) // block, "int64")
    return n.emit(ops.gather, v, idx, axis=a)


def _as(n: NodeCtx, v: Value, dt: DType) -> Value:
    return v if v.dtype == dt else n.emit(ops.cast, v, to=dt)


@handles("DequantizeLinear")
def _dequantize(n: NodeCtx) -> Value:
    x, scale, zp = n.x(0), n.x(1), n.opt(2)
    axis, block = n.attr("axis", 1), n.attr("block_size", 0)
    out_dt = (onnx_dtype(n.attr("output_dtype"), "DequantizeLinear output_dtype")
              if n.attr("output_dtype") else scale.dtype)
    dx = _as(n, x, float32)
    if zp is not None and not x.dtype.is_float:
        dx = n.emit(ops.sub, dx, _as(n, _broadcast(n, zp, x, axis, block), float32))
    y = n.emit(ops.mul, dx, _as(n, _broadcast(n, scale, x, axis, block), float32))
    return n.emit(ops.cast, y, to=out_dt, out=0) if out_dt != float32 else n.emit(
        ops.identity, y, out=0)


@handles("QuantizeLinear")
def _quantize(n: NodeCtx) -> Value:
    x, scale, zp = n.x(0), n.x(1), n.opt(2)
    axis, block = n.attr("axis", 1), n.attr("block_size", 0)
    if zp is not None:
        out_dt = zp.dtype
    elif n.attr("output_dtype"):
        out_dt = onnx_dtype(n.attr("output_dtype"), "QuantizeLinear output_dtype")
    else:
        out_dt = onnx_dtype(2, "uint8")
    work = (onnx_dtype(n.attr("precision"), "QuantizeLinear precision") if n.attr("precision")
            else x.dtype if x.dtype == scale.dtype else float32)
    q = n.emit(ops.div, _as(n, x, work), _as(n, _broadcast(n, scale, x, axis, block), work))
    if out_dt.name in _RANGES:
        qi = n.emit(ops.cast, n.emit(ops.round_, q), to=int32)
        if zp is not None:
            qi = n.emit(ops.add, qi, _as(n, _broadcast(n, zp, x, axis, block), int32))
        lo, hi = _RANGES[out_dt.name]
        return n.emit(ops.cast, n.emit(ops.clip, qi, min=lo, max=hi), to=out_dt, out=0)
    if out_dt.name in FLOAT8_MAX:
        if n.attr("saturate", 1):
            q = n.emit(ops.clip, q, min=-FLOAT8_MAX[out_dt.name], max=FLOAT8_MAX[out_dt.name])
        return n.emit(ops.cast, q, to=out_dt, out=0)
    raise n.unsupported(f"QuantizeLinear to {out_dt.name}")


def _centered(n: NodeCtx, x: Value, zp: Value | None, row_axis: int | None = None) -> Value:
    """x - zero_point as int32 (a per-row zero point of A is unsqueezed to a column)."""
    xi = _as(n, x, int32)
    if zp is None:
        return xi
    z = _as(n, zp, int32)
    if row_axis is not None and z.ndim == 1 and z.shape[0] != 1:
        z = n.emit(ops.unsqueeze, z, axes=(row_axis,))
    return n.emit(ops.sub, xi, z)


@handles("MatMulInteger")
def _matmul_integer(n: NodeCtx) -> Value:
    a = _centered(n, n.x(0), n.opt(2), row_axis=-1)
    b = _centered(n, n.x(1), n.opt(3))
    return n.emit(ops.matmul, a, b, out=0)


def _int_conv(n: NodeCtx, x: Value, w: Value, x_zp: Value | None, w_zp: Value | None) -> Value:
    """Integer convolution computed exactly in float64, as int32."""
    xc = _as(n, _centered(n, x, x_zp), float64)
    wi = _as(n, w, int32)
    if w_zp is not None:
        z = _as(n, w_zp, int32)
        if z.ndim == 1 and z.shape[0] != 1:
            z = n.emit(ops.reshape, z, shape=(-1, *([1] * (w.ndim - 1))))
        wi = n.emit(ops.sub, wi, z)
    k = w.ndim - 2
    kernel = [int(d) for d in n.static_shape(w, f"{n.op_type} weight")[2:]]
    strides, dilations = int_list(n.attr("strides"), k, 1), int_list(n.attr("dilations"), k, 1)
    y = n.emit(ops.conv, xc, _as(n, wi, float64), None, strides=strides, dilations=dilations,
               pads=explicit_pads(n, x, kernel, strides, dilations), group=n.attr("group", 1))
    return _as(n, n.emit(ops.round_, y), int32)


@handles("ConvInteger")
def _conv_integer(n: NodeCtx) -> Value:
    y = _int_conv(n, n.x(0), n.x(1), n.opt(2), n.opt(3))
    return n.emit(ops.identity, y, out=0)


def _requantize(n: NodeCtx, acc: Value, scales: tuple[Value, Value, Value], y_zp: Value | None,
                like: Value) -> Value:
    """round(acc * (a_scale * b_scale / y_scale) + y_zp), clipped to the output type."""
    sa, sb, sy = scales
    if sa.ndim == 1 and sa.shape[0] != 1 and acc.ndim > 1:
        sa = n.emit(ops.reshape, sa, shape=(-1,))
    factor = n.emit(ops.div, n.emit(ops.mul, sa, _as(n, sb, sa.dtype)), _as(n, sy, sa.dtype))
    d = n.emit(ops.mul, _as(n, acc, float64), _as(n, factor, float64))
    if y_zp is not None:
        d = n.emit(ops.add, d, _as(n, y_zp, float64))
    out_dt = y_zp.dtype if y_zp is not None else like.dtype
    lo, hi = _RANGES[out_dt.name]
    q = n.emit(ops.clip, n.emit(ops.round_, d), min=lo, max=hi)
    return n.emit(ops.cast, q, to=out_dt, out=0)


@handles("QLinearMatMul")
def _qlinear_matmul(n: NodeCtx) -> Value:
    a = _centered(n, n.x(0), n.opt(2))
    b = _centered(n, n.x(3), n.opt(5))
    acc = n.emit(ops.matmul, a, b)
    return _requantize(n, acc, (n.x(1), n.x(4), n.x(6)), n.opt(7), n.x(0))


@handles("QLinearConv")
def _qlinear_conv(n: NodeCtx) -> Value:
    x, w = n.x(0), n.x(3)
    acc = _int_conv(n, x, w, n.opt(2), n.opt(5))
    bias = n.opt(8)
    if bias is not None:
        acc = n.emit(ops.add, acc, n.emit(ops.unsqueeze, _as(n, bias, int32),
                                          axes=tuple(range(1, x.ndim - 1))))
    w_scale = n.x(4)
    if w_scale.ndim == 1 and w_scale.shape[0] != 1:
        w_scale = n.emit(ops.unsqueeze, w_scale, axes=tuple(range(1, x.ndim - 1)))
    return _requantize(n, acc, (n.x(1), w_scale, n.x(6)), n.opt(7), x)


def _parse_einsum(eq: str, ranks: list[int]) -> tuple[list[str], str]:
    """Operand and output subscripts with '...' replaced by fresh letters."""
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"equation has {len(terms)} operands, node has {len(ranks)}")
    used = set(eq)
    spare = [c for c in string.ascii_letters + string.digits if c not in used]
    n_ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks, strict=True)
                 if "..." in t), default=0)
    ell = "".join(spare[:n_ell])
    out_terms = []
    for t, r in zip(terms, ranks, strict=True):
        if "..." in t:
            k = r - len(t.replace("...", ""))
            t = t.replace("...", ell[n_ell - k:] if k else "")
        if len(t) != r:
            raise ValueError(f"subscripts {t!r} do not match an operand of rank {r}")
        out_terms.append(t)
    if "->" in eq:
        out = rhs.replace("...", ell)
    else:
        counts = {c: sum(t.count(c) for t in out_terms) for c in set("".join(out_terms))}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    return out_terms, out


@handles("Einsum")
def _einsum(n: NodeCtx) -> Value:
    """Einsum as broadcast products and a sum: each operand is transposed and unsqueezed into
    one shared letter order, multiplied, then the contracted letters are summed out."""
    xs = n.inputs()
    try:
        terms, out = _parse_einsum(n.attr("equation", ""), [x.ndim for x in xs])
    except ValueError as e:
        raise n.error(f"invalid equation {n.attr('equation')!r}: {e}") from None
    if any(len(set(t)) != len(t) for t in terms):
        raise n.unsupported("Einsum with a repeated subscript in one operand (diagonal)")
    letters = list(out) + sorted({c for t in terms for c in t} - set(out))
    prod = None
    for x, t in zip(xs, terms, strict=True):
        order = [c for c in letters if c in t]
        perm = tuple(t.index(c) for c in order)
        if perm != tuple(range(len(perm))):
            x = n.emit(ops.transpose, x, perm=perm)
        missing = tuple(i for i, c in enumerate(letters) if c not in t)
        if missing:
            x = n.emit(ops.unsqueeze, x, axes=missing)
        prod = x if prod is None else n.emit(ops.mul, prod, x)
    assert prod is not None
    summed = tuple(range(len(out), len(letters)))
    if summed:
        prod = n.emit(ops.reduce_sum, prod, axes=summed, keepdims=False)
    return n.emit(ops.identity, prod, out=0)
