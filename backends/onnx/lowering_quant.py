"""ONNX lowerings of the quantisation ops.

quantize_linear / dequantize_linear map to QuantizeLinear / DequantizeLinear (blocked scales and
4-bit types need opset 21). fake_quantize is written out with Div, Round, Clip. dynamic_quant_matmul
is ONNX Runtime's com.microsoft DynamicQuantizeMatMul for target "ort" and DynamicQuantizeLinear +
MatMulInteger for target "portable". int8 weights (int8 codes that no node computes) go out as
uint8 codes + 128 with zero point + 128, the same real values: ONNX Runtime's uint8 x int8 x86
kernels add products in pairs with 16-bit saturation on CPUs without VNNI (plain AVX2), while its
uint8 x uint8 kernels widen first and are exact everywhere. ORT folds the offset at load time, so
QDQ weights still fuse into QLinearConv / MatMulIntegerToFloat. matmul_nbits is ONNX Runtime's
com.microsoft MatMulNBits for target "ort" and a dequantise-then-MatMul with standard ops for
target "portable".
"""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, float32, int4, int8, int32, uint4, uint8
from lbdl_graph.errors import OnnxError

from .lowering import LOWERINGS, OnnxBuilder, onnx_dtype

__all__: list[str] = []


def _params(b: OnnxBuilder, scale: str, zp: str | None, x_axis_dim: object,
            block_size: int) -> tuple[str, str | None]:
    """A 1-element 1-D scale (and zero point) means per tensor to us; ONNX wants a scalar."""
    t = b.in_type(1)
    if block_size == 0 and t.ndim == 1 and t.shape[0] == 1 and x_axis_dim != 1:
        scalar = b.ints([], name="scalar_shape")
        return (b.op("Reshape", scale, scalar),
                b.op("Reshape", zp, scalar) if zp is not None else None)
    return scale, zp


def _needs_21(b: OnnxBuilder, what: str, dt: DType, block_size: int) -> None:
    if b.opset < 21 and (block_size or dt in (int4, uint4)):
        raise OnnxError(f"{what}: blocked scales and 4-bit types need opset >= 21, "
                        f"got {b.opset}")


def _axis_dim(b: OnnxBuilder, axis: int) -> object:
    x = b.in_type(0)
    return x.shape[axis % x.ndim] if x.ndim else 1


def _leaf_int8(b: OnnxBuilder, i: int) -> bool:
    """Input ``i`` holds int8 codes that no node computes (a weight or a graph input)."""
    v = b.node.inputs[i]
    return v is not None and v.type.dtype == int8 and v not in b.ctx.producers


def _to_uint8(b: OnnxBuilder, codes: str, zp: str | None, scale_shape: tuple[int, ...]
              ) -> tuple[str, str]:
    """int8 ``codes`` and zero point (None: 0) as uint8 + 128; the same real values."""
    def shift(t: str) -> str:  # int8 -> int32 + 128 -> uint8
        wide = b.op("Cast", t, to=onnx_dtype(int32))
        return b.op("Cast", b.op("Add", wide, b.scalar(128, int32, name="offset")),
                    to=onnx_dtype(uint8))
    if zp is None:
        return shift(codes), b.constant(np.full(scale_shape, 128, np.uint8), name="zero_point")
    return shift(codes), shift(zp)


@LOWERINGS.register(ops.quantize_linear)
def _quantize_linear_onnx(b: OnnxBuilder, x: str, scale: str, zero_point: str | None, *,
                          axis: int, block_size: int, to: DType | None) -> str:
    out = b.out_type().dtype
    _needs_21(b, "quantize_linear", out, block_size)
    scale, zero_point = _params(b, scale, zero_point, _axis_dim(b, axis), block_size)
    if zero_point is None and b.opset < 21 and out != uint8:  # no output_dtype before 21
        zero_point = b.constant(np.zeros(b.in_type(1).shape, out.numpy), name="zero_point")
        scale, zero_point = _params(b, scale, zero_point, _axis_dim(b, axis), block_size)
    output_dtype = onnx_dtype(out) if zero_point is None and b.opset >= 21 else None
    if b.opset < 19 and b.in_type(0).dtype != float32:  # float16 x arrived in opset 19
        x, scale = b.cast(x, float32), b.cast(scale, float32)
    return b.op("QuantizeLinear", x, scale, zero_point, axis=axis,
                block_size=block_size or None, output_dtype=output_dtype)


@LOWERINGS.register(ops.dequantize_linear)
def _dequantize_linear_onnx(b: OnnxBuilder, q: str, scale: str, zero_point: str | None, *,
                            axis: int, block_size: int) -> str:
    _needs_21(b, "dequantize_linear", b.in_type(0).dtype, block_size)
    if _leaf_int8(b, 0) and not block_size:  # int8 weights -> exact uint8 x uint8 kernels
        q, zero_point = _to_uint8(b, q, zero_point, tuple(int(d) for d in b.in_type(1).shape))
    scale, zero_point = _params(b, scale, zero_point, _axis_dim(b, axis), block_size)
    dt = b.in_type(1).dtype
    if b.opset < 19 and dt != float32:  # float16 scales arrived in opset 19
        y = b.op("DequantizeLinear", q, b.cast(scale, float32), zero_point, axis=axis)
        return b.cast(y, dt)
    return b.op("DequantizeLinear", q, scale, zero_point, axis=axis,
                block_size=block_size or None)


@LOWERINGS.register(ops.fake_quantize)
def _fake_quantize_onnx(b: OnnxBuilder, x: str, scale: str, zero_point: str, *, qmin: int,
                        qmax: int) -> str:
    # (clip(round_half_even(x / s) + zp, qmin, qmax) - zp) * s, all in x's dtype
    dt = b.in_type(0).dtype
    q = b.op("Add", b.op("Round", b.op("Div", x, scale, dtype=dt), dtype=dt), zero_point,
             dtype=dt)
    q = b.op("Clip", q, b.scalar(qmin, dt, name="qmin"), b.scalar(qmax, dt, name="qmax"),
             dtype=dt)
    return b.op("Mul", b.op("Sub", q, zero_point, dtype=dt), scale, dtype=dt)


@LOWERINGS.register(ops.dynamic_quant_matmul)
def _dynamic_quant_matmul_onnx(b: OnnxBuilder, x: str, w: str, w_scale: str,
                               w_zero_point: str | None, bias: str | None) -> str:
    if b.in_type(1).dtype == int8:  # exact uint8 x uint8 kernels on every x86 CPU
        w, w_zero_point = _to_uint8(b, w, w_zero_point, tuple(int(d) for d in b.in_type(2).shape))
    if b.target == "ort":  # the fused kernel ORT would make of the portable form, bias included
        return b.op("DynamicQuantizeMatMul", x, w, w_scale, w_zero_point, bias,
                    domain="com.microsoft")
    q, x_scale, x_zero_point = b.op_n("DynamicQuantizeLinear", 3, x)
    acc = b.op("MatMulInteger", q, w, x_zero_point, w_zero_point)
    y = b.op("Mul", b.op("Cast", acc, to=onnx_dtype(float32)),
             b.op("Mul", x_scale, w_scale))
    return b.op("Add", y, bias) if bias is not None else y


def _unpack(b: OnnxBuilder, packed: str, bits: int, last: int, count: int) -> str:
    """uint8 codes packed low bits first along the last axis, as float32 (``count`` kept)."""
    if bits != 8:
        per = 8 // bits
        shifts = b.constant(np.arange(per, dtype=np.uint8) * bits, name="shifts")
        fields = b.op("BitShift", b.op("Unsqueeze", packed, b.ints([-1], name="axis")), shifts,
                      direction="RIGHT")
        codes = b.op("Mod", fields, b.scalar(1 << bits, uint8, name="modulus"))  # low bits
        packed = b.op("Reshape", codes, b.ints([0] * last + [-1], name="shape"))
    cut = b.op("Slice", packed, b.ints([0], name="starts"), b.ints([count], name="ends"),
               b.ints([-1], name="axes"))
    return b.op("Cast", cut, to=onnx_dtype(float32))


@LOWERINGS.register(ops.matmul_nbits)
def _matmul_nbits_onnx(b: OnnxBuilder, x: str, packed: str, scales: str,
                       zero_points: str | None, *, K: int, N: int, bits: int, block_size: int,
                       accuracy_level: int) -> str:
    float_zp = zero_points is not None and b.in_type(3).dtype != uint8
    if b.target == "ort" and not (bits == 8 and float_zp):  # ORT lacks 8-bit float-zp blocks
        return b.op("MatMulNBits", x, packed, scales, zero_points, domain="com.microsoft", K=K,
                    N=N, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    # portable: W = (codes - zp) * scale per block, then x @ W^T in float32
    dt = b.in_type(0).dtype
    nb = b.in_type(1).shape[1]
    codes = _unpack(b, packed, bits, 2, block_size)  # (N, nb, block_size)
    if zero_points is None:
        zp = b.scalar(2.0 ** (bits - 1), float32, name="zero_point")
    elif b.in_type(3).dtype == uint8:
        zp = b.op("Unsqueeze", _unpack(b, zero_points, bits, 1, int(nb)),
                  b.ints([-1], name="axis"))
    else:
        zp = b.op("Unsqueeze", b.op("Cast", zero_points, to=onnx_dtype(float32)),
                  b.ints([-1], name="axis"))
    s = b.op("Unsqueeze", b.op("Cast", scales, to=onnx_dtype(float32)), b.ints([-1], name="axis"))
    w = b.op("Mul", b.op("Sub", codes, zp), s)
    w = b.op("Slice", b.op("Reshape", w, b.ints([N, -1], name="shape")), b.ints([0], name="s"),
             b.ints([K], name="e"), b.ints([1], name="a"))
    y = b.op("MatMul", b.op("Cast", x, to=onnx_dtype(float32)),
             b.op("Transpose", w, perm=[1, 0]))
    return b.op("Cast", y, to=onnx_dtype(dt))

