"""VJP rules of fake_quantize (quantisation-aware training) and matmul_nbits (QLoRA).

The rounding has a zero derivative almost everywhere, so the rule is the straight-through
estimator: x gets the cotangent inside the clipping range and nothing outside. Scale and zero
point get the learnable-quantisation gradients of torch's ``_fake_quantize_learnable_*``
(LSQ+): the driver sums them to per-tensor or per-channel shapes.

``matmul_nbits`` differentiates with respect to x only (``dx = g @ W`` with W dequantised in the
graph from the packed codes): its codes, scales and zero points are a frozen quantised weight,
as in QLoRA, where float adapters beside it are trained.
"""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .helpers import scalar
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


@VJPS.register(ops.fake_quantize)
def _fake_quantize_vjp(g: Value, out: Value, x: Value, scale: Value, zero_point: Value, *,
                       qmin: int, qmax: int) -> Grads:
    # y = (clip(round(x/s) + z, qmin, qmax) - z) s, round' := 1 inside the range:
    # dy = [inside] dx + ([inside] (y - x)/s + [below] (qmin - z) + [above] (qmax - z)) ds
    #      - [outside] s dz
    code = ops.add(ops.round_(ops.div(x, scale)), zero_point)
    below = ops.less(code, scalar(qmin, x))
    above = ops.greater(code, scalar(qmax, x))
    inside = ops.logical_not(ops.logical_or(below, above))
    zero = scalar(0.0, g)
    g_x = ops.where(inside, g, zero)
    edge = ops.where(below, ops.sub(scalar(qmin, x), zero_point),
                     ops.sub(scalar(qmax, x), zero_point))
    d_scale = ops.where(inside, ops.div(ops.sub(out, x), scale), edge)
    g_zp = ops.where(inside, zero, ops.neg(ops.mul(g, scale)))
    return (g_x, ops.mul(g, d_scale), g_zp)


def _unpack(packed: Value, bits: int, count: int) -> Value:
    """int32 codes packed low bits first along the last axis of a uint8 tensor (static shape),
    with ``count`` entries on that axis. Integer div / sub only (no bit ops), so every backend
    runs it."""
    p = ops.cast(packed, to="int32")
    if bits == 8:
        codes = p
    else:
        base = ops.constant(value=np.int32(1 << bits))
        fields = []
        for _ in range(8 // bits):
            hi = ops.div(p, base)
            fields.append(ops.unsqueeze(ops.sub(p, ops.mul(hi, base)), axes=(-1,)))
            p = hi
        shape = tuple(packed.shape)
        codes = ops.reshape(ops.concat(*fields, axis=-1),
                            shape=(*shape[:-1], shape[-1] * (8 // bits)))
    if codes.shape[-1] != count:
        codes = ops.slice_(codes, starts=(0,), ends=(count,), axes=(-1,))
    return codes


@VJPS.register(ops.matmul_nbits)
def _matmul_nbits_vjp(g: Value, out: Value, x: Value, packed: Value, scales: Value,
                      zero_points: Value | None, *, K: int, N: int, bits: int, block_size: int,
                      accuracy_level: int) -> Grads:
    # y = x W^T, W (N, K) = (codes - zp) * scale per block: dx = g W; the weight is constant
    n, nb = int(packed.shape[0]), int(packed.shape[1])
    codes = ops.cast(_unpack(packed, bits, block_size), to=scales.dtype)  # (N, nb, bs)
    if zero_points is None:
        zp = scalar(2.0 ** (bits - 1), scales)
    elif zero_points.dtype == scales.dtype:
        zp = ops.unsqueeze(zero_points, axes=(-1,))
    else:
        zp = ops.unsqueeze(ops.cast(_unpack(zero_points, bits, nb), to=scales.dtype), axes=(-1,))
    w = ops.mul(ops.sub(codes, zp), ops.unsqueeze(scales, axes=(-1,)))
    w = ops.reshape(w, shape=(n, nb * block_size))
    if nb * block_size != K:
        w = ops.slice_(w, starts=(0,), ends=(K,), axes=(1,))
    return (ops.matmul(g, w), None, None, None)
