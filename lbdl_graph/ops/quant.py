"""Quantisation ops: (de)quantize_linear, fake_quantize, matmul_nbits, dynamic_quant_matmul.

``quantize_linear`` / ``dequantize_linear`` follow ONNX QuantizeLinear / DequantizeLinear
(opset 21): ``q = saturate(round_half_even(x / scale) + zero_point)`` and
``x = (q - zero_point) * scale``, per tensor (scalar scale), per axis (1-D scale along
``axis``) or blocked (``block_size`` > 0: the scale has x's rank with ``ceil(d / block_size)``
entries along ``axis``). ``matmul_nbits`` is ONNX Runtime's com.microsoft MatMulNBits: a weight
W (N, K) stored as ``bits``-bit codes in blocks of ``block_size`` along K.
"""

from __future__ import annotations

from typing import Any

from ..dtypes import DType, dtype, float32, int4, int8, int32, uint4, uint8
from ..errors import DTypeError, ShapeError
from ..opdef import Attr, Trait, defop
from ..shapes import Dim, broadcast_shapes, fmt_shape, normalize_axis
from ..types import TensorType
from ._rules import require

__all__ = [
    "QUANT_DTYPES",
    "dequantize_linear",
    "dynamic_quant_matmul",
    "fake_quantize",
    "matmul_nbits",
    "nbits_layout",
    "qrange",
    "quantize_linear",
]

QUANT_DTYPES: tuple[DType, ...] = (int8, uint8, int4, uint4)
_FLOATS = ("float32", "float16")


def qrange(dt: Any) -> tuple[int, int]:
    """The (min, max) code of an integer quantisation dtype."""
    d = dtype(dt)
    if not d.is_integer:
        raise DTypeError(f"{d.name} is not an integer quantisation type")
    if d.kind == "int":
        return -(2 ** (d.bits - 1)), 2 ** (d.bits - 1) - 1
    return 0, 2**d.bits - 1


def _check_params(what: str, x: TensorType, scale: TensorType, zp: TensorType | None,
                  axis: int, block_size: int) -> None:
    """Check the scale / zero-point layout: per tensor, per axis or blocked."""
    if zp is not None and tuple(zp.shape) != tuple(scale.shape):
        raise ShapeError(f"{what}: zero_point {zp} must have the shape of scale {scale}")
    if block_size < 0:
        raise ShapeError(f"{what}: block_size must be >= 0, got {block_size}")
    if scale.ndim == 0 or (scale.ndim == 1 and scale.shape[0] == 1 and block_size == 0):
        if block_size:
            raise ShapeError(f"{what}: blocked quantisation needs a scale of x's rank, got "
                             f"{scale} for {x}")
        return
    a = normalize_axis(axis, x.ndim)
    if block_size == 0:
        d = x.shape[a]
        if scale.ndim != 1 or (isinstance(d, int) and scale.shape[0] != d):
            raise ShapeError(f"{what}: per-axis scale {scale} must be 1-D of length {d} "
                             f"(axis {axis} of {x})")
        return
    want = _blocked(x, a, block_size)
    if scale.ndim != x.ndim or any(isinstance(w, int) and isinstance(s, int) and w != s
                                   for w, s in zip(want, scale.shape, strict=True)):
        raise ShapeError(f"{what}: blocked scale {scale} should be {fmt_shape(want)} for {x} "
                         f"with axis={axis}, block_size={block_size}")


def _blocked(x: TensorType, a: int, bs: int) -> list[Dim]:
    return [-(-d // bs) if i == a and isinstance(d, int) else d for i, d in enumerate(x.shape)]


def _quantize_rule(x: TensorType, scale: TensorType, zero_point: TensorType | None, *,
                   axis: int, block_size: int, to: DType | None) -> TensorType:
    if x.dtype.name not in _FLOATS:
        raise DTypeError(f"quantize_linear: x must be float32 or float16, got {x}")
    if scale.dtype != x.dtype:
        raise DTypeError(f"quantize_linear: scale {scale} must have x's dtype ({x})")
    out = zero_point.dtype if zero_point is not None else (to or uint8)
    if to is not None and to != out:
        raise DTypeError(f"quantize_linear: to={to.name} differs from zero_point {zero_point}")
    if out not in QUANT_DTYPES:
        raise DTypeError(f"quantize_linear: cannot quantise to {out.name}; use int8, uint8, "
                         "int4 or uint4")
    _check_params("quantize_linear", x, scale, zero_point, axis, block_size)
    return TensorType(out, x.shape)


_AXIS = (Attr("axis", "int", 1), Attr("block_size", "int", 0))

quantize_linear = defop(
    "quantize_linear", ("x", "scale", "zero_point?"), infer=_quantize_rule,
    attrs=(*_AXIS, Attr("to", "dtype", None, True)), onnx="QuantizeLinear",
    doc="saturate(round_half_even(x / scale) + zero_point) to int8/uint8/int4/uint4; "
        "the dtype is zero_point's, else `to` (default uint8)")


def _dequantize_rule(q: TensorType, scale: TensorType, zero_point: TensorType | None, *,
                     axis: int, block_size: int) -> TensorType:
    if q.dtype not in (*QUANT_DTYPES, int32):
        raise DTypeError(f"dequantize_linear: q must be int8, uint8, int4, uint4 or int32, "
                         f"got {q}")
    if scale.dtype.name not in _FLOATS:
        raise DTypeError(f"dequantize_linear: scale must be float32 or float16, got {scale}")
    if zero_point is not None and zero_point.dtype != q.dtype:
        raise DTypeError(f"dequantize_linear: zero_point {zero_point} must have q's dtype ({q})")
    _check_params("dequantize_linear", q, scale, zero_point, axis, block_size)
    return TensorType(scale.dtype, q.shape)


dequantize_linear = defop(
    "dequantize_linear", ("q", "scale", "zero_point?"), infer=_dequantize_rule, attrs=_AXIS,
    onnx="DequantizeLinear", doc="(q - zero_point) * scale, in scale's float dtype")


def _fake_quantize_rule(x: TensorType, scale: TensorType, zero_point: TensorType, *,
                        qmin: int, qmax: int) -> TensorType:
    require(x, "fake_quantize input", kinds=("float",))
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if t.dtype != x.dtype:
            raise DTypeError(f"fake_quantize: {name} {t} must have x's dtype ({x})")
        if tuple(broadcast_shapes(x.shape, t.shape)) != tuple(x.shape):
            raise ShapeError(f"fake_quantize: {name} {t} does not broadcast to {x}")
    if qmin >= qmax:
        raise ShapeError(f"fake_quantize: qmin={qmin} must be < qmax={qmax}")
    return x


fake_quantize = defop(
    "fake_quantize", ("x", "scale", "zero_point"), infer=_fake_quantize_rule,
    attrs=(Attr("qmin", "int", -128), Attr("qmax", "int", 127)),
    traits=(Trait.ELEMENTWISE, Trait.DIFFERENTIABLE),
    doc="(clip(round_half_even(x / scale) + zp, qmin, qmax) - zp) * scale in float; the "
        "gradient is straight-through inside the clipping range, 0 outside")


def nbits_layout(K: int, bits: int, block_size: int) -> tuple[int, int]:
    """(blocks per column, bytes per block) of a MatMulNBits weight."""
    return -(-K // block_size), block_size * bits // 8


def _matmul_nbits_rule(x: TensorType, packed: TensorType, scales: TensorType,
                       zero_points: TensorType | None, *, K: int, N: int, bits: int,
                       block_size: int, accuracy_level: int) -> TensorType:
    if x.dtype.name not in _FLOATS:
        raise DTypeError(f"matmul_nbits: x must be float32 or float16, got {x}")
    if bits not in (2, 4, 8):
        raise ShapeError(f"matmul_nbits: bits must be 2, 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ShapeError(f"matmul_nbits: block_size must be a power of 2 >= 16, got "
                         f"{block_size}")
    if K < 1 or N < 1:
        raise ShapeError(f"matmul_nbits: K and N must be positive, got K={K}, N={N}")
    if x.ndim < 1 or (isinstance(x.shape[-1], int) and x.shape[-1] != K):
        raise ShapeError(f"matmul_nbits: x {x} must end in K={K}")
    nb, blob = nbits_layout(K, bits, block_size)
    if packed.dtype != uint8 or tuple(packed.shape) != (N, nb, blob):
        raise ShapeError(f"matmul_nbits: packed weight {packed} should be u8[{N},{nb},{blob}] "
                         f"for K={K}, N={N}, bits={bits}, block_size={block_size}")
    if scales.dtype != x.dtype or tuple(scales.shape) != (N, nb):
        raise ShapeError(f"matmul_nbits: scales {scales} should be "
                         f"{x.dtype.short}[{N},{nb}]")
    if zero_points is not None:
        packed_zp = (N, -(-nb * bits // 8))
        ok = (zero_points.dtype == uint8 and tuple(zero_points.shape) == packed_zp) or (
            zero_points.dtype == x.dtype and tuple(zero_points.shape) == (N, nb))
        if not ok:
            raise ShapeError(f"matmul_nbits: zero_points {zero_points} should be u8"
                             f"{fmt_shape(packed_zp)} (packed codes) or "
                             f"{x.dtype.short}[{N},{nb}] (float)")
    return TensorType(x.dtype, (*x.shape[:-1], N))


matmul_nbits = defop(
    "matmul_nbits", ("x", "packed", "scales", "zero_points?"), infer=_matmul_nbits_rule,
    attrs=(Attr("K", "int"), Attr("N", "int"), Attr("bits", "int", 4),
           Attr("block_size", "int", 32), Attr("accuracy_level", "int", 0)),
    traits=(Trait.DIFFERENTIABLE,),
    doc="x @ W^T with W (N, K) = (codes - zero_point) * scale per block of block_size along "
        "K (ONNX Runtime MatMulNBits layout; default zero point 2**(bits-1))")


def _dynamic_quant_matmul_rule(x: TensorType, w: TensorType, w_scale: TensorType,
                               w_zero_point: TensorType | None,
                               bias: TensorType | None) -> TensorType:
    if x.dtype != float32 or x.ndim < 1:
        raise DTypeError(f"dynamic_quant_matmul: x must be float32 of rank >= 1, got {x}")
    if w.dtype not in (int8, uint8) or w.ndim != 2:
        raise DTypeError(f"dynamic_quant_matmul: w must be a 2-D int8 or uint8 matrix, got {w}")
    k, n = w.shape
    if isinstance(x.shape[-1], int) and x.shape[-1] != k:
        raise ShapeError(f"dynamic_quant_matmul: x {x} does not end in K={k} of w {w}")
    if w_scale.dtype != float32 or tuple(w_scale.shape) not in ((), (1,), (n,)):
        raise ShapeError(f"dynamic_quant_matmul: w_scale {w_scale} should be f32[] or f32[{n}]")
    if w_zero_point is not None and (w_zero_point.dtype != w.dtype
                                     or tuple(w_zero_point.shape) != tuple(w_scale.shape)):
        raise ShapeError(f"dynamic_quant_matmul: w_zero_point {w_zero_point} should be "
                         f"{w.dtype.short}{fmt_shape(w_scale.shape)}")
    if bias is not None and (bias.dtype != float32 or tuple(bias.shape) != (n,)):
        raise ShapeError(f"dynamic_quant_matmul: bias {bias} should be f32[{n}]")
    return TensorType(float32, (*x.shape[:-1], n))


dynamic_quant_matmul = defop(
    "dynamic_quant_matmul", ("x", "w", "w_scale", "w_zero_point?", "bias?"),
    infer=_dynamic_quant_matmul_rule,
    doc="x quantised to uint8 at run time (ONNX DynamicQuantizeLinear), an exact integer "
        "matmul with the quantised w (K, N), rescaled by x_scale * w_scale, plus bias")
