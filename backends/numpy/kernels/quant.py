"""NumPy kernels for lbdl_graph.ops.quant, rounding exactly like ONNX Runtime's CPU kernels.

ORT (MLAS) quantises with ``x / scale`` in float32, rounds half to even and saturates; float16
inputs are widened to float32 first. NaN becomes the lowest code, as MLAS's vector kernels do.
Dequantisation is ``float(q - zero_point) * scale`` in float32, rounded to the scale's dtype.
"""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, dtype, uint8
from lbdl_graph.ops.quant import qrange

from . import KERNELS

__all__ = ["dynamic_quantize", "expand_params", "unpack_codes"]

Array = np.ndarray
F32 = np.float32


def expand_params(p: Array, shape: tuple[int, ...], axis: int, block_size: int) -> Array:
    """A scale or zero point broadcast against an input of ``shape`` (per tensor: as is; per
    axis: reshaped along ``axis``; blocked: each entry repeated ``block_size`` times)."""
    if p.ndim == 0 or (p.ndim == 1 and p.shape[0] == 1 and block_size == 0):
        return p.reshape(())
    a = axis % len(shape)
    if block_size == 0:
        view = [1] * len(shape)
        view[a] = -1
        return p.reshape(view)
    return np.repeat(p, block_size, axis=a)[(slice(None),) * a + (slice(0, shape[a]),)]


def _quantize(x: Array, scale: Array, zero_point: Array | None, axis: int, block_size: int,
              to: DType) -> Array:
    lo, hi = qrange(to)
    s = expand_params(np.asarray(scale, dtype=F32), x.shape, axis, block_size)
    q = np.rint(np.asarray(x, dtype=F32) / s)
    if zero_point is not None:
        q = q + expand_params(zero_point.astype(F32), x.shape, axis, block_size)
    q = np.where(np.isnan(q), lo, np.clip(q, lo, hi))
    return np.asarray(q.astype(np.int32).astype(to.numpy))


@KERNELS.register(ops.quantize_linear)
def _quantize_linear_kernel(x: Array, scale: Array, zero_point: Array | None = None, *,
                            axis: int, block_size: int, to: DType | None) -> Array:
    """ONNX QuantizeLinear (opset 21): per tensor, per axis or blocked."""
    out = dtype(zero_point.dtype) if zero_point is not None else (to or uint8)
    return _quantize(x, scale, zero_point, axis, block_size, out)


@KERNELS.register(ops.dequantize_linear)
def _dequantize_linear_kernel(q: Array, scale: Array, zero_point: Array | None = None, *,
                              axis: int, block_size: int) -> Array:
    """ONNX DequantizeLinear (opset 21): ``(q - zero_point) * scale``."""
    v = q.astype(np.int32)
    if zero_point is not None:
        v = v - expand_params(zero_point.astype(np.int32), q.shape, axis, block_size)
    s = expand_params(np.asarray(scale, dtype=F32), q.shape, axis, block_size)
    return np.asarray((v.astype(F32) * s).astype(scale.dtype))


@KERNELS.register(ops.fake_quantize)
def _fake_quantize_kernel(x: Array, scale: Array, zero_point: Array, *, qmin: int,
                          qmax: int) -> Array:
    """Quantise-dequantise in x's float type: ``(clip(rint(x/s) + zp, qmin, qmax) - zp) * s``."""
    q = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
    return np.asarray(((q - zero_point) * scale).astype(x.dtype))


def unpack_codes(packed: Array, bits: int, count: int) -> Array:
    """Unsigned ``bits``-bit codes packed low bits first along the last axis of a uint8 array,
    as ``uint8`` with ``count`` entries on the last axis."""
    if bits == 8:
        return packed[..., :count]
    per, mask = 8 // bits, (1 << bits) - 1
    fields = [(packed >> (bits * i)) & mask for i in range(per)]
    codes = np.stack(fields, axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per)
    return codes[..., :count]


def nbits_weight(packed: Array, scales: Array, zero_points: Array | None, *, K: int,
                 bits: int, block_size: int) -> Array:
    """The dequantised MatMulNBits weight W (N, K) in float32."""
    n, nb, _ = packed.shape
    codes = unpack_codes(packed, bits, block_size).astype(F32)  # (N, nb, block_size)
    if zero_points is None:
        zp: Array = np.asarray(2.0 ** (bits - 1), dtype=F32)
    elif zero_points.dtype == np.uint8:
        zp = unpack_codes(zero_points, bits, nb).astype(F32)[..., None]
    else:
        zp = zero_points.astype(F32)[..., None]
    w = (codes - zp) * scales.astype(F32)[..., None]
    return w.reshape(n, nb * block_size)[:, :K]


@KERNELS.register(ops.matmul_nbits)
def _matmul_nbits_kernel(x: Array, packed: Array, scales: Array,
                         zero_points: Array | None = None, *, K: int, N: int, bits: int,
                         block_size: int, accuracy_level: int) -> Array:
    """x @ W^T with W dequantised block by block (accuracy_level only matters on ORT)."""
    w = nbits_weight(packed, scales, zero_points, K=K, bits=bits, block_size=block_size)
    return np.asarray(np.matmul(x.astype(F32), w.T).astype(x.dtype))


def dynamic_quantize(x: Array) -> tuple[Array, Array, Array]:
    """ONNX DynamicQuantizeLinear as ORT computes it: (uint8 codes, scale, zero point).

    The range always includes 0; a constant-zero input gets scale 1 (ORT's choice where the
    ONNX formula would divide by zero).
    """
    x = np.asarray(x, dtype=F32)
    lo = min(F32(x.min(initial=0.0)), F32(0.0))
    hi = max(F32(x.max(initial=0.0)), F32(0.0))
    scale = F32(1.0) if hi == lo else F32((hi - lo) / F32(255.0))
    zp = np.rint(np.clip(F32(0.0) - lo / scale, 0.0, 255.0)).astype(np.uint8)
    q = _quantize(x, np.asarray(scale), np.asarray(zp), 1, 0, uint8)
    return q, np.asarray(scale, dtype=F32), np.asarray(zp, dtype=np.uint8)


@KERNELS.register(ops.dynamic_quant_matmul)
def _dynamic_quant_matmul_kernel(x: Array, w: Array, w_scale: Array,
                                 w_zero_point: Array | None = None,
                                 bias: Array | None = None) -> Array:
    """Integer matmul of the dynamically quantised x with w, rescaled in float32."""
    q, xs, xz = dynamic_quantize(x)
    wv = w.astype(np.float64)
    if w_zero_point is not None:
        wv = wv - w_zero_point.astype(np.float64).reshape(-1)
    # float64 holds every int32 accumulator exactly (|term| <= 255 * 255), and uses BLAS
    acc = np.matmul(q.astype(np.float64) - float(xz), wv)
    y = acc.astype(F32) * (xs * w_scale.astype(F32).reshape(-1))
    if bias is not None:
        y = y + bias
    return np.asarray(y.astype(F32))
