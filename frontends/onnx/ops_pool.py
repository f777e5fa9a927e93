"""ONNX pooling ops: MaxPool, AveragePool, LpPool, global pools, MaxUnpool and LRN.

AveragePool and LpPool with dilations (which the IR's avg_pool lacks) become depthwise
convolutions with a ones kernel, divided by the number of counted positions in each window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import float32
from lbdl_graph.graph import Value

from .context import NodeCtx, handles
from .ops_nn import explicit_pads, int_list


def _pool_geometry(n: NodeCtx, x: Value) -> tuple[list[int], list[int], list[int], Any]:
    kernel = [int(v) for v in n.attr("kernel_shape")]
    k = len(kernel)
    strides = int_list(n.attr("strides"), k, 1)
    dilations = int_list(n.attr("dilations"), k, 1)
    return kernel, strides, dilations, explicit_pads(n, x, kernel, strides, dilations)


@handles("MaxPool")
def _max_pool(n: NodeCtx) -> Any:
    x = n.x(0)
    if n.attr("storage_order", 0):
        raise n.unsupported("MaxPool with storage_order=1 (column-major indices)")
    kernel, strides, dilations, pads = _pool_geometry(n, x)
    kw = {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
          "ceil_mode": bool(n.attr("ceil_mode", 0))}
    if x.dtype.is_float:
        return n.emit(ops.max_pool, x, out=(0, 1), **kw)
    if x.dtype.bits > 16:
        raise n.unsupported(f"MaxPool on {x.dtype.name}")
    # small integers are exact in float32: pool there and cast back
    y, idx = n.emit(ops.max_pool, n.emit(ops.cast, x, to=float32), out=(None, 1), **kw)
    return n.emit(ops.cast, y, to=x.dtype, out=0), idx


def _window_sum(n: NodeCtx, x: Value, kernel: list[int], strides: list[int],
                pads: list[int] | None, dilations: list[int], ceil_mode: bool,
                include_pad: bool | None) -> Value:
    """Window sums (a depthwise conv with a ones kernel); divided by the number of counted
    positions per window unless ``include_pad`` is None."""
    shape = n.static_shape(x, f"{n.op_type} with dilations")
    k = len(kernel)
    p = list(pads) if pads else [0] * (2 * k)
    extra = []
    for i in range(k):
        dim, s, eff = shape[2 + i], strides[i], dilations[i] * (kernel[i] - 1) + 1
        span = dim + p[i] + p[i + k]
        out = (math.ceil if ceil_mode else math.floor)((span - eff) / s) + 1
        if ceil_mode and (out - 1) * s >= dim + p[i]:
            out -= 1
        extra.append(max((out - 1) * s + eff - span, 0))
    xp = n.emit(ops.pad, x, pads=[0, 0, *p[:k], 0, 0, *(p[k + i] + extra[i] for i in range(k))])
    conv = {"strides": strides, "dilations": dilations, "pads": None}
    ones = np.ones((shape[1], 1, *kernel), dtype=x.dtype.numpy)
    total = n.emit(ops.conv, xp, n.constant(ones, x.dtype), None, group=shape[1], **conv)
    if include_pad is None:
        return total
    mask = np.zeros((1, 1, *(shape[2 + i] + p[i] + p[i + k] + extra[i] for i in range(k))),
                    dtype=x.dtype.numpy)
    region = tuple(slice(0, shape[2 + i] + p[i] + p[i + k]) if include_pad else
                   slice(p[i], p[i] + shape[2 + i]) for i in range(k))
    inside: tuple[int | slice, ...] = (0, 0, *region)
    mask[inside] = 1
    count = n.emit(ops.conv, n.constant(mask, x.dtype),
                   n.constant(np.ones((1, 1, *kernel), dtype=x.dtype.numpy), x.dtype), None,
                   **conv)
    return n.emit(ops.div, total, count)


@handles("AveragePool")
def _avg_pool(n: NodeCtx) -> Value:
    x = n.x(0)
    kernel, strides, dilations, pads = _pool_geometry(n, x)
    ceil_mode, include = bool(n.attr("ceil_mode", 0)), bool(n.attr("count_include_pad", 0))
    if any(d != 1 for d in dilations):
        return n.emit(ops.identity, _window_sum(n, x, kernel, strides, pads, dilations,
                                                ceil_mode, include), out=0)
    return n.emit(ops.avg_pool, x, kernel_shape=kernel, strides=strides, pads=pads,
                  ceil_mode=ceil_mode, count_include_pad=include, out=0)


@handles("LpPool")
def _lp_pool(n: NodeCtx) -> Value:
    x = n.x(0)
    kernel, strides, dilations, pads = _pool_geometry(n, x)
    p = float(n.attr("p", 2))
    xp = n.emit(ops.pow_, n.emit(ops.abs_, x), n.scalar(p, x))
    ceil_mode = bool(n.attr("ceil_mode", 0))
    if any(d != 1 for d in dilations):
        total = _window_sum(n, xp, kernel, strides, pads, dilations, ceil_mode, None)
    else:
        mean = n.emit(ops.avg_pool, xp, kernel_shape=kernel, strides=strides, pads=pads,
                      ceil_mode=ceil_mode, count_include_pad=True)
        total = n.emit(ops.mul, mean, n.scalar(float(np.prod(kernel)), x))
    return n.emit(ops.pow_, total, n.scalar(1.0 / p, x), out=0)


@handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(n: NodeCtx) -> Value:
    x = n.x(0)
    op = ops.reduce_mean if n.op_type == "GlobalAveragePool" else ops.reduce_max
    return n.emit(op, x, axes=tuple(range(2, x.ndim)), keepdims=True, out=0)


@handles("LRN")
def _lrn(n: NodeCtx) -> Value:
    """x / (bias + alpha / size * sum of squares over a window of channels) ** beta, the sum
    taken with an avg_pool over the channel axis."""
    x = n.x(0)
    shape = n.static_shape(x, "LRN")
    size = int(n.attr("size"))
    alpha, beta, bias = n.attr("alpha", 1e-4), n.attr("beta", 0.75), n.attr("bias", 1.0)
    sq = n.emit(ops.reshape, n.emit(ops.mul, x, x),
                shape=(shape[0], 1, shape[1], int(np.prod(shape[2:]))))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    mean = n.emit(ops.avg_pool, sq, kernel_shape=(size, 1), pads=(lo, 0, hi, 0),
                  count_include_pad=True)
    s = n.emit(ops.reshape, mean, shape=shape)
    base = n.emit(ops.add, n.scalar(bias, x), n.emit(ops.mul, s, n.scalar(alpha, x)))
    return n.emit(ops.div, x, n.emit(ops.pow_, base, n.scalar(beta, x)), out=0)


@handles("MaxUnpool")
def _max_unpool(n: NodeCtx) -> Value:
    """Scatter the pooled values to their flat indices in a zero tensor of the output shape."""
    x, idx = n.x(0), n.x(1)
    dims = n.static_shape(x, "MaxUnpool")
    kernel = [int(k) for k in n.attr("kernel_shape")]
    k = len(kernel)
    strides = int_list(n.attr("strides"), k, 1)
    pads = int_list(n.attr("pads"), 2 * k, 0)
    inferred = [*dims[:2], *((dims[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + k]
                             for i in range(k))]
    out_shape = n.ints(2, "output_shape") if n.has(2) else inferred
    assert out_shape is not None
    flat = n.constant(np.zeros(int(np.prod(inferred)), dtype=x.dtype.numpy), x.dtype)
    y = n.emit(ops.scatter_elements, flat, n.emit(ops.reshape, idx, shape=(-1,)),
               n.emit(ops.reshape, x, shape=(-1,)), axis=0)
    y = n.emit(ops.reshape, y, shape=inferred)
    if list(out_shape) == inferred:
        return y
    # as the ONNX reference: indices address the inferred shape, then zeros pad the end
    extra = [o - i for o, i in zip(out_shape, inferred, strict=True)]
    return n.emit(ops.pad, y, pads=[0] * len(extra) + extra, out=0)
