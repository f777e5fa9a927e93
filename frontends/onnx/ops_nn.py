"""ONNX neural-network ops: MatMul/Gemm, convolutions, pooling, normalisations, Dropout."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import float32
from lbdl_graph.graph import Value
from lbdl_graph.shapes import normalize_axis

from .context import NodeCtx, handles


@handles("MatMul")
def _matmul(n: NodeCtx) -> Value:
    return n.emit(ops.matmul, n.x(0), n.x(1), out=0)


@handles("Gemm")
def _gemm(n: NodeCtx) -> Value:
    a, b, c = n.x(0), n.x(1), n.opt(2)
    alpha, beta = n.attr("alpha", 1.0), n.attr("beta", 1.0)
    if n.attr("transA", 0):
        a = n.emit(ops.transpose, a, perm=(1, 0))
    if n.attr("transB", 0):
        b = n.emit(ops.transpose, b, perm=(1, 0))
    last = c is None and alpha == 1.0
    y = n.emit(ops.matmul, a, b, out=0 if last else None)
    if alpha != 1.0:
        y = n.emit(ops.mul, y, n.scalar(alpha, y), out=0 if c is None else None)
    if c is None:
        return y
    if beta != 1.0:
        c = n.emit(ops.mul, c, n.scalar(beta, c))
    return n.emit(ops.add, y, c, out=0)


def int_list(v: Any, k: int, default: int) -> list[int]:
    """An ints attribute as a list, or ``k`` copies of ``default`` when absent."""
    return [int(x) for x in v] if v is not None else [default] * k


def explicit_pads(n: NodeCtx, x: Value, kernel: list[int], strides: list[int],
                  dilations: list[int]) -> list[int] | None:
    """Explicit pads for auto_pad (None when the node uses its ``pads`` attribute)."""
    auto = n.attr("auto_pad", "NOTSET")
    k = len(kernel)
    if auto in ("NOTSET", ""):
        return n.attr("pads")
    if auto == "VALID":
        return [0] * (2 * k)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise n.error(f"unknown auto_pad {auto!r}")
    pads = [0] * (2 * k)
    for i in range(k):
        d, s = x.shape[2 + i], strides[i]
        eff = (kernel[i] - 1) * dilations[i] + 1
        if isinstance(d, int):
            total = max((math.ceil(d / s) - 1) * s + eff - d, 0)
        elif s == 1:
            total = eff - 1
        else:
            raise n.unsupported(f"auto_pad {auto} with stride {s} needs static spatial dims, "
                                f"got {x.type}")
        small, big = total // 2, total - total // 2
        pads[i], pads[i + k] = (small, big) if auto == "SAME_UPPER" else (big, small)
    return pads


@handles("Conv")
def _conv(n: NodeCtx) -> Value:
    x, w, b = n.x(0), n.x(1), n.opt(2)
    k = w.ndim - 2
    kernel = [int(d) for d in n.static_shape(w, "Conv weight")[2:]]
    strides = int_list(n.attr("strides"), k, 1)
    dilations = int_list(n.attr("dilations"), k, 1)
    pads = explicit_pads(n, x, kernel, strides, dilations)
    return n.emit(ops.conv, x, w, b, strides=strides, pads=pads, dilations=dilations,
                  group=n.attr("group", 1), out=0)


@handles("ConvTranspose")
def _conv_transpose(n: NodeCtx) -> Value:
    x, w, b = n.x(0), n.x(1), n.opt(2)
    k = w.ndim - 2
    kernel = [int(d) for d in n.static_shape(w, "ConvTranspose weight")[2:]]
    strides = int_list(n.attr("strides"), k, 1)
    dilations = int_list(n.attr("dilations"), k, 1)
    out_pad = int_list(n.attr("output_padding"), k, 0)
    auto = n.attr("auto_pad", "NOTSET")
    out_shape = n.attr("output_shape")
    pads = n.attr("pads")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        dims = n.static_shape(x, "ConvTranspose with output_shape or auto_pad")[2:]
        target = list(out_shape)[-k:] if out_shape is not None else [
            d * s for d, s in zip(dims, strides, strict=True)]
        pads = [0] * (2 * k)
        for i in range(k):
            eff = (kernel[i] - 1) * dilations[i] + 1
            total = strides[i] * (dims[i] - 1) + out_pad[i] + eff - target[i]
            if total < 0:  # the output is longer: grow it at the end
                out_pad[i] -= total
                continue
            small, big = total // 2, total - total // 2
            pads[i], pads[i + k] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * k)
    return n.emit(ops.conv_transpose, x, w, b, strides=strides, pads=pads, dilations=dilations,
                  group=n.attr("group", 1), output_padding=out_pad, out=0)


@handles("BatchNormalization")
def _batch_norm(n: NodeCtx) -> Value:
    if n.attr("training_mode", 0) or any(o for o in n.outs[1:]):
        raise n.unsupported("training-mode BatchNormalization (batch statistics)")
    return n.emit(ops.batch_norm, n.x(0), n.x(1), n.x(2), n.x(3), n.x(4),
                  epsilon=n.attr("epsilon", 1e-5), out=0)


def _stash(n: NodeCtx, x: Value) -> Value:
    """x in the stash type (float32 unless stash_type=0 or x is float32/float64)."""
    if n.attr("stash_type", 1) == 1 and x.dtype.name not in ("float32", "float64"):
        return n.emit(ops.cast, x, to=float32)
    return x


def _normalize(n: NodeCtx, x: Value, axes: tuple[int, ...], eps: float
               ) -> tuple[Value, Value, Value]:
    """(x - mean) * inv_std over ``axes``; returns (normalized, mean, inv_std) (keepdims)."""
    mean = n.emit(ops.reduce_mean, x, axes=axes, keepdims=True)
    d = n.emit(ops.sub, x, mean)
    var = n.emit(ops.reduce_mean, n.emit(ops.mul, d, d), axes=axes, keepdims=True)
    inv = n.emit(ops.reciprocal, n.emit(ops.sqrt, n.emit(ops.add, var, n.scalar(eps, var))))
    return n.emit(ops.mul, d, inv), mean, inv


def _affine(n: NodeCtx, y: Value, scale: Value | None, bias: Value | None, out: int) -> Value:
    if scale is not None:
        y = n.emit(ops.mul, y, scale, out=out if bias is None else None)
    if bias is not None:
        y = n.emit(ops.add, y, bias, out=out)
    return y


@handles("LayerNormalization")
def _layer_norm(n: NodeCtx) -> Any:
    x, scale, bias = n.x(0), n.x(1), n.opt(2)
    axis = normalize_axis(n.attr("axis", -1), x.ndim)
    eps = n.attr("epsilon", 1e-5)
    normalized = tuple(x.shape[axis:])
    exact = tuple(scale.shape) == normalized and (bias is None or tuple(bias.shape) == normalized)
    if exact and not any(o for o in n.outs[1:]):
        return n.emit(ops.layer_norm, x, scale, bias, axis=axis, epsilon=eps, out=0)
    xs = _stash(n, x)
    y, mean, inv = _normalize(n, xs, tuple(range(axis, x.ndim)), eps)
    if y.dtype != x.dtype:
        y = n.emit(ops.cast, y, to=x.dtype)
    return _affine(n, y, scale, bias, 0), mean, inv


@handles("RMSNormalization")
def _rms_norm(n: NodeCtx) -> Value:
    x, scale = n.x(0), n.x(1)
    axis = normalize_axis(n.attr("axis", -1), x.ndim)
    xs = _stash(n, x)
    ms = n.emit(ops.reduce_mean, n.emit(ops.mul, xs, xs), axes=tuple(range(axis, x.ndim)),
                keepdims=True)
    inv = n.emit(ops.reciprocal, n.emit(ops.sqrt, n.emit(ops.add, ms, n.scalar(
        n.attr("epsilon", 1e-5), ms))))
    y = n.emit(ops.mul, xs, inv)
    if y.dtype != x.dtype:
        y = n.emit(ops.cast, y, to=x.dtype)
    return n.emit(ops.mul, y, scale, out=0)


def _per_channel(n: NodeCtx, v: Value, rank: int) -> Value:
    """A [C] tensor reshaped to broadcast over (N, C, spatial...)."""
    return n.emit(ops.unsqueeze, v, axes=tuple(range(1, rank - 1))) if rank > 2 else v


@handles("InstanceNormalization")
def _instance_norm(n: NodeCtx) -> Value:
    x, scale, bias = n.x(0), n.x(1), n.x(2)
    y, _, _ = _normalize(n, x, tuple(range(2, x.ndim)), n.attr("epsilon", 1e-5))
    return _affine(n, y, _per_channel(n, scale, x.ndim), _per_channel(n, bias, x.ndim), 0)


@handles("GroupNormalization")
def _group_norm(n: NodeCtx) -> Value:
    x, scale, bias = n.x(0), n.x(1), n.x(2)
    g = int(n.attr("num_groups"))
    c = x.shape[1]
    spatial = n.static_shape(x, "GroupNormalization")[2:] if x.ndim > 2 else ()
    if not isinstance(c, int) or c % g:
        raise n.error(f"{c} channels cannot be split into {g} groups")
    xs = _stash(n, x)
    xr = n.emit(ops.reshape, xs, shape=(0, g, -1))
    y, _, _ = _normalize(n, xr, (2,), n.attr("epsilon", 1e-5))
    y = n.emit(ops.reshape, y, shape=(0, c, *spatial))
    if y.dtype != x.dtype:
        y = n.emit(ops.cast, y, to=x.dtype)
    if scale.shape[0] == g and g != c:  # opset 18: one scale per group
        scale, bias = (n.emit(ops.reshape, n.emit(ops.expand, n.emit(ops.unsqueeze, v, axes=(1,)),
                                                  shape=(g, c // g)), shape=(c,))
                       for v in (scale, bias))
    return _affine(n, y, _per_channel(n, scale, x.ndim), _per_channel(n, bias, x.ndim), 0)


@handles("LpNormalization")
def _lp_norm(n: NodeCtx) -> Value:
    x = n.x(0)
    axis = (normalize_axis(n.attr("axis", -1), x.ndim),)
    p = n.attr("p", 2)
    if p == 1:
        norm = n.emit(ops.reduce_sum, n.emit(ops.abs_, x), axes=axis, keepdims=True)
    elif p == 2:
        norm = n.emit(ops.sqrt, n.emit(ops.reduce_sum, n.emit(ops.mul, x, x), axes=axis,
                                       keepdims=True))
    else:
        raise n.error(f"p must be 1 or 2, got {p}")
    zero = n.scalar(0, x)
    safe = n.emit(ops.where, n.emit(ops.equal, norm, zero), n.scalar(1, x), norm)
    return n.emit(ops.div, x, safe, out=0)  # 0 where the norm is 0


@handles("MeanVarianceNormalization")
def _mvn(n: NodeCtx) -> Value:
    x = n.x(0)
    axes = tuple(n.attr("axes", [0, 2, 3]))
    mean = n.emit(ops.reduce_mean, x, axes=axes, keepdims=True)
    ex2 = n.emit(ops.reduce_mean, n.emit(ops.mul, x, x), axes=axes, keepdims=True)
    std = n.emit(ops.sqrt, n.emit(ops.sub, ex2, n.emit(ops.mul, mean, mean)))
    std = n.emit(ops.add, std, n.scalar(1e-9, x))
    return n.emit(ops.div, n.emit(ops.sub, x, mean), std, out=0)


@handles("Dropout")
def _dropout(n: NodeCtx) -> Any:
    x = n.x(0)
    training = n.const(2, "training_mode") if n.has(2) else None
    ratio = n.scalar_const(1, "ratio") if n.has(1) else n.attr("ratio", 0.5)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]) and ratio:
        raise n.unsupported("training-mode Dropout with random mask")
    y = n.emit(ops.identity, x, out=0)
    if len(n.outs) > 1 and n.outs[1]:
        return y, n.emit(ops.full_like, x, value=1.0, dtype="bool", out=1)
    return y
