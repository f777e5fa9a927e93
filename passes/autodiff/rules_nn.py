"""VJP rules of matmul, convolutions and pooling.

Convolutions are differentiated with convolutions: the input gradient of ``conv`` is a
``conv_transpose`` (and vice versa) and the weight gradient is a ``conv`` of the input with the
cotangent as kernel, batch and channel axes swapped, strides and dilations exchanged. Spatial
dims must be static (the output padding depends on them); batch dims may be symbolic.
"""

from __future__ import annotations

import math

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Value
from lbdl_graph.ops.unpool import windows_overlap

from .conv_im2col import im2col_fits, im2col_weight_grad
from .helpers import reshape_to, scalar, static_dims, swap_last2, zeros_like
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]
Ints = tuple[int, ...]
Window = tuple[Ints, Ints, Ints]


@VJPS.register(ops.matmul)
def _matmul_vjp(g: Value, out: Value, a: Value, b: Value) -> Grads:
    # d(A B) = dA B + A dB  =>  A_bar = G B^T, B_bar = A^T G (1-D operands as row/column)
    a2 = ops.unsqueeze(a, axes=(0,)) if a.ndim == 1 else a
    b2 = ops.unsqueeze(b, axes=(1,)) if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = ops.unsqueeze(g2, axes=(max(g.ndim - (b.ndim != 1), 0),))
    if b.ndim == 1:
        g2 = ops.unsqueeze(g2, axes=(g2.ndim,))
    ga = ops.matmul(g2, swap_last2(b2))
    k, m = a2.shape[-1], g2.shape[-1]
    if b2.ndim == 2 and a2.ndim > 2 and isinstance(k, int) and isinstance(m, int):
        # a 2-D B shared by a batch of A (a linear layer on (N, T, D)): one (K, N*T) @ (N*T, M)
        # product instead of N products summed afterwards (sum_to) -- same sum, one pass
        gb = ops.matmul(swap_last2(ops.reshape(a2, shape=(-1, k))),
                        ops.reshape(g2, shape=(-1, m)))
    else:
        gb = ops.matmul(swap_last2(a2), g2)
    return (ops.squeeze(ga, axes=(-2,)) if a.ndim == 1 else ga,
            ops.squeeze(gb, axes=(-1,)) if b.ndim == 1 else gb)


def _window(k: int, strides: Ints | None, pads: Ints | None, dilations: Ints | None) -> Window:
    return (strides or (1,) * k, pads or (0,) * (2 * k), dilations or (1,) * k)


def _crop(v: Value, sizes: Ints) -> Value:
    """``v`` cut to ``sizes`` on its spatial axes (2, 3, ...) where it is larger."""
    axes = [2 + i for i, n in enumerate(sizes) if v.shape[2 + i] != n]
    if not axes:
        return v
    out: Value = ops.slice_(v, starts=[0] * len(axes), ends=[sizes[a - 2] for a in axes],
                            axes=axes)
    return out


def _conv_input_grad(g: Value, w: Value, size: Ints, win: Window, group: int) -> Value:
    """The adjoint of conv w.r.t. its input: conv_transpose with the output padding that
    restores the input length ``size`` (lost to the floor of the strided output length)."""
    s, p, d = win
    k = len(size)
    lengths = static_dims(g.shape[2:], "conv gradient")
    kernel = static_dims(w.shape[2:], "conv gradient")
    extra = tuple(size[i] + p[i] + p[i + k] - d[i] * (kernel[i] - 1) - 1
                  - s[i] * (lengths[i] - 1) for i in range(k))
    out: Value = ops.conv_transpose(g, w, None, strides=s, pads=p, dilations=d, group=group,
                                    output_padding=extra if any(extra) else None)
    return out


def _conv_weight_grad(x: Value, gy: Value, kernel: Ints, win: Window, group: int) -> Value:
    """w_bar[m, c, k] = sum_{n, o} gy[n, m, o] x_pad[n, group(m) + c, o s + k d]: a conv of x
    (channels as batch) with gy (batch as input channels), strides and dilations exchanged;
    ungrouped ones whose patches fit take the im2col + MatMul form (``conv_im2col.py``)."""
    if im2col_fits(x, gy, kernel, group):
        return im2col_weight_grad(x, gy, kernel, win)
    s, p, d = win
    sp = tuple(range(2, x.ndim))
    c_in, m = static_dims([x.shape[1], gy.shape[1]], "conv weight gradient channels")
    if group == 1:
        xt = ops.transpose(x, perm=(1, 0, *sp))  # (C, N, *S)
        gt = ops.transpose(gy, perm=(1, 0, *sp))  # (M, N, *O)
    else:  # channel group gi of x meets output group gi of gy: fold groups into the batch axis
        x_sp = static_dims(x.shape[2:], "grouped conv weight gradient")
        g_sp = static_dims(gy.shape[2:], "grouped conv weight gradient")
        xg = ops.reshape(x, shape=(0, group, c_in // group, *x_sp))
        xt = ops.reshape(ops.transpose(xg, perm=(2, 1, 0, *(i + 1 for i in sp))),
                         shape=(c_in // group, -1, *x_sp))  # (C/G, G*N, *S)
        gg = ops.reshape(gy, shape=(0, group, m // group, *g_sp))
        gt = ops.reshape(ops.transpose(gg, perm=(1, 2, 0, *(i + 1 for i in sp))),
                         shape=(m, -1, *g_sp))  # (M, N, *O)
    wt = ops.conv(xt, gt, None, strides=d, pads=p, dilations=s, group=group)  # (C/G, M, *K')
    return _crop(ops.transpose(wt, perm=(1, 0, *sp)), kernel)


@VJPS.register(ops.conv)
def _conv_vjp(g: Value, out: Value, x: Value, w: Value, b: Value | None, *,
              strides: Ints | None, pads: Ints | None, dilations: Ints | None,
              group: int) -> Grads:
    # y = x * w + b:  x_bar = conv_transpose(g, w), w_bar = x * g (swapped axes), b_bar = sum g
    k = w.ndim - 2
    win = _window(k, strides, pads, dilations)
    size = static_dims(x.shape[2:], "conv gradient (input spatial dims)")
    kernel = static_dims(w.shape[2:], "conv gradient (kernel)")
    gx = _conv_input_grad(g, w, size, win, group)
    gw = _conv_weight_grad(x, g, kernel, win, group)
    gb = ops.reduce_sum(g, axes=(0, *range(2, g.ndim)), keepdims=False) if b is not None else None
    return (gx, gw, gb)


@VJPS.register(ops.conv_transpose)
def _conv_transpose_vjp(g: Value, out: Value, x: Value, w: Value, b: Value | None, *,
                        strides: Ints | None, pads: Ints | None, dilations: Ints | None,
                        group: int, output_padding: Ints | None) -> Grads:
    # conv_transpose is the adjoint of conv:  x_bar = conv(g, w), w_bar = g * x (swapped axes)
    k = w.ndim - 2
    win = _window(k, strides, pads, dilations)
    size = static_dims(x.shape[2:], "conv_transpose gradient (input spatial dims)")
    kernel = static_dims(w.shape[2:], "conv_transpose gradient (kernel)")
    static_dims(g.shape[2:], "conv_transpose gradient (output spatial dims)")
    s, p, d = win
    gx = _crop(ops.conv(g, w, None, strides=s, pads=p, dilations=d, group=group), size)
    gw = _conv_weight_grad(g, x, kernel, win, group)
    gb = ops.reduce_sum(g, axes=(0, *range(2, g.ndim)), keepdims=False) if b is not None else None
    return (gx, gw, gb)


@VJPS.register(ops.max_pool)
def _max_pool_vjp(g: tuple[Value | None, ...], out: tuple[Value, ...], x: Value, *,
                  kernel_shape: Ints, strides: Ints | None, pads: Ints | None, ceil_mode: bool,
                  dilations: Ints | None) -> Grads:
    # y = x[argmax of each window]: x_bar[argmax] += g, scattered with the Indices output
    # (the indices are flat over all of x, so one 1-D scatter needs no per-plane arithmetic)
    gy, idx = g[0], out[1]
    if gy is None:
        return (None,)
    if not windows_overlap(kernel_shape, strides, dilations):
        # distinct indices: writing gy at them equals scatter-adding it (ONNX MaxUnpool)
        return (ops.max_unpool(gy, idx, x, kernel_shape=kernel_shape, strides=strides,
                               pads=pads),)
    flat = (-1,)
    grad = ops.scatter_elements(ops.reshape(zeros_like(x), shape=flat),
                                ops.reshape(idx, shape=flat), ops.reshape(gy, shape=flat),
                                axis=0, reduction="add")
    return (reshape_to(grad, x),)


@VJPS.register(ops.avg_pool)
def _avg_pool_vjp(g: Value, out: Value, x: Value, *, kernel_shape: Ints, strides: Ints | None,
                  pads: Ints | None, ceil_mode: bool, count_include_pad: bool) -> Grads:
    # y = window_sum(x) / count:  x_bar = window_sum^T(g / count), a conv_transpose with ones
    k = len(kernel_shape)
    s, p, _ = _window(k, strides, pads, None)
    size = static_dims(x.shape[2:], "avg_pool gradient (spatial dims)")
    outs = static_dims(g.shape[2:], "avg_pool gradient (output dims)")
    (channels,) = static_dims([x.shape[1]], "avg_pool gradient (channels)")
    # ceil_mode: pad the end so that a floor-mode window sum yields the same output length
    ends = [max(p[i + k], s[i] * (outs[i] - 1) + kernel_shape[i] - size[i] - p[i])
            for i in range(k)]
    win_pads = (*p[:k], *ends)
    extra = tuple(size[i] + p[i] + ends[i] - kernel_shape[i] - s[i] * (outs[i] - 1)
                  for i in range(k))
    ones_w = ops.constant(value=np.ones((channels, 1, *kernel_shape), dtype=x.dtype.numpy))
    if count_include_pad and not ceil_mode:
        scaled = ops.mul(g, scalar(1.0 / math.prod(kernel_shape), g))
    else:  # 1/count = avg_pool(1) / window_sum(1): right for both count_include_pad settings
        ones = ops.full_like(x, value=1.0)
        valid = ops.conv(ones, ones_w, None, strides=s, pads=win_pads, group=channels)
        inv = ops.reciprocal(valid) if not count_include_pad else ops.div(
            ops.avg_pool(ones, kernel_shape=kernel_shape, strides=strides, pads=pads,
                         ceil_mode=ceil_mode, count_include_pad=True), valid)
        scaled = ops.mul(g, inv)
    gx = ops.conv_transpose(scaled, ones_w, None, strides=s, pads=win_pads, group=channels,
                            output_padding=extra if any(extra) else None)
    return (gx,)
