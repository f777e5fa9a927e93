"""NumPy kernels for lbdl_graph.ops.nn: matmul, convolutions, pooling and normalisation.

Convolutions are im2col (a strided window view, copied once) followed by one batched matmul
over the groups; transposed convolutions are one matmul followed by a col2im scatter-add with
one vectorised add per kernel position. Pools reduce over the window view the same way.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lbdl_graph import ops

from . import KERNELS

__all__: list[str] = []

Ints = tuple[int, ...]


def _geometry(k: int, strides: Ints | None, pads: Ints | None,
              dilations: Ints | None) -> tuple[Ints, Ints, Ints, Ints]:
    """Defaulted (strides, pads_begin, pads_end, dilations) for ``k`` spatial axes."""
    s = strides or (1,) * k
    p = pads or (0,) * (2 * k)
    d = dilations or (1,) * k
    return tuple(s), tuple(p[:k]), tuple(p[k:]), tuple(d)


def _pad(x: np.ndarray, begin: Ints, end: Ints, value: float) -> np.ndarray:
    """Pad the spatial axes (2, 3, ...) of ``x`` with a constant; no copy when nothing to pad."""
    if not any(begin) and not any(end):
        return x
    widths = [(0, 0), (0, 0), *zip(begin, end, strict=True)]
    return np.pad(x, widths, constant_values=value)


def _windows(xp: np.ndarray, kernel: Ints, strides: Ints, dilations: Ints,
             out: Ints | None = None) -> np.ndarray:
    """A strided view (N, C, *out, *kernel) of the windows of the padded input ``xp``.

    ``out`` truncates the window count per axis (pools in ceil mode pad a little extra).
    """
    k = len(kernel)
    eff = tuple(d * (kk - 1) + 1 for kk, d in zip(kernel, dilations, strict=True))
    view = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + k)))
    counts = out or (None,) * k
    index = (slice(None), slice(None),
             *(slice(None, n * s if n is not None else None, s)
               for n, s in zip(counts, strides, strict=True)),
             *(slice(None, None, d) for d in dilations))
    return view[index]


@KERNELS.register(ops.matmul)
def _matmul_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy matmul; 1-D @ 1-D gives a 0-d array rather than a scalar."""
    return np.asarray(np.matmul(a, b))


@KERNELS.register(ops.conv)
def _conv_kernel(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, strides: Ints | None,
                 pads: Ints | None, dilations: Ints | None, group: int) -> np.ndarray:
    """N-d grouped convolution (ONNX Conv) via im2col and one batched matmul."""
    k = x.ndim - 2
    s, pb, pe, d = _geometry(k, strides, pads, dilations)
    n = x.shape[0]
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    g, mg = group, m // group
    win = _windows(_pad(x, pb, pe, 0.0), kernel, s, d)
    out = win.shape[2:2 + k]
    # (N, G, C/G, *O, *K) -> (G, N, *O, C/G, *K): each row of a group's matrix is one patch
    win = win.reshape(n, g, cg, *out, *kernel)
    perm = (1, 0, *range(3, 3 + k), 2, *range(3 + k, 3 + 2 * k))
    rows = n * math.prod(out)
    cols = win.transpose(perm).reshape(g, rows, cg * math.prod(kernel))
    wm = w.reshape(g, mg, -1).transpose(0, 2, 1)
    y = cols[0] @ wm[0] if g == 1 else np.matmul(cols, wm)
    # (G, N, *O, M/G) -> (N, G, M/G, *O); the reshape copies into a contiguous result
    y = y.reshape(g, n, *out, mg).transpose(1, 0, 2 + k, *range(2, 2 + k)).reshape(n, m, *out)
    if b is not None:
        y += b.reshape(m, *(1,) * k)
    return y


@KERNELS.register(ops.conv_transpose)
def _conv_transpose_kernel(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *,
                           strides: Ints | None, pads: Ints | None, dilations: Ints | None,
                           group: int, output_padding: Ints | None) -> np.ndarray:
    """N-d grouped transposed convolution (ONNX ConvTranspose): matmul, then col2im."""
    k = x.ndim - 2
    s, pb, pe, d = _geometry(k, strides, pads, dilations)
    op = output_padding or (0,) * k
    n, c = x.shape[:2]
    ins = x.shape[2:]
    mg = w.shape[1]
    kernel = w.shape[2:]
    g, cg = group, c // group
    # contributions of every input pixel to every kernel tap: (G, M/G * K, C/G) @ (G, C/G, N * I)
    xm = x.reshape(n, g, cg, -1).transpose(1, 2, 0, 3).reshape(g, cg, -1)
    wm = w.reshape(g, cg, -1).transpose(0, 2, 1)
    taps = (wm[0] @ xm[0])[None] if g == 1 else np.matmul(wm, xm)
    taps = taps.reshape(g, mg, *kernel, n, *ins)
    full = tuple(si * (ni - 1) + di * (ki - 1) + 1 + oi
                 for si, ni, di, ki, oi in zip(s, ins, d, kernel, op, strict=True))
    y = np.zeros((g, mg, n, *full), dtype=np.result_type(x, w))
    lead = (slice(None),) * 3
    # input pixel i, tap t lands at output i * s + t * d (before cropping the begin pads)
    for tap in np.ndindex(*kernel):
        dst = tuple(slice(t * di, t * di + si * (ni - 1) + 1, si)
                    for t, di, si, ni in zip(tap, d, s, ins, strict=True))
        y[(*lead, *dst)] += taps[(slice(None), slice(None), *tap)]
    crop = tuple(slice(bi, fi - ei) for bi, fi, ei in zip(pb, full, pe, strict=True))
    y = y[(*lead, *crop)]
    out = y.shape[3:]
    y = y.transpose(2, 0, 1, *range(3, 3 + k)).reshape(n, g * mg, *out)
    if b is not None:
        y += b.reshape(-1, *(1,) * k)
    return y


def _pool_out(dims: Ints, kernel: Ints, s: Ints, pb: Ints, pe: Ints, d: Ints,
              ceil_mode: bool) -> Ints:
    """Output length per spatial axis; ceil mode drops a window starting in the end padding."""
    out = []
    for i, n in enumerate(dims):
        span = n + pb[i] + pe[i] - (d[i] * (kernel[i] - 1) + 1)
        o = -(-span // s[i]) + 1 if ceil_mode else span // s[i] + 1
        if ceil_mode and (o - 1) * s[i] >= n + pb[i]:
            o -= 1
        out.append(o)
    return tuple(out)


def _pool_windows(x: np.ndarray, kernel: Ints, s: Ints, pb: Ints, pe: Ints, d: Ints,
                  out: Ints, fill: float) -> np.ndarray:
    """Window view (N, C, *out, *kernel) of ``x`` padded with ``fill``, extended for ceil mode."""
    extra = tuple(max(0, (o - 1) * si + di * (ki - 1) + 1 - (n + bi + ei))
                  for o, si, di, ki, n, bi, ei in zip(out, s, d, kernel, x.shape[2:], pb, pe,
                                                      strict=True))
    xp = _pad(x, pb, tuple(e + x_ for e, x_ in zip(pe, extra, strict=True)), fill)
    return _windows(xp, kernel, s, d, out)


def _axis_grid(k: int, i: int, values: np.ndarray) -> np.ndarray:
    """``values`` laid along spatial axis ``i`` of an (N, C, *out) array."""
    return values.reshape((1, 1, *(-1 if j == i else 1 for j in range(k))))


@KERNELS.register(ops.max_pool)
def _max_pool_kernel(x: np.ndarray, *, kernel_shape: Ints, strides: Ints | None,
                     pads: Ints | None, ceil_mode: bool,
                     dilations: Ints | None) -> tuple[np.ndarray, np.ndarray]:
    """Window max and its flat row-major int64 index into ``x`` (ONNX MaxPool, storage_order 0).

    Ties pick the first window element in row-major order; a NaN in a window wins.
    """
    k = len(kernel_shape)
    s, pb, pe, d = _geometry(k, strides, pads, dilations)
    out = _pool_out(x.shape[2:], kernel_shape, s, pb, pe, d, ceil_mode)
    win = _pool_windows(x, kernel_shape, s, pb, pe, d, out, -np.inf)
    flat = win.reshape(*win.shape[:2 + k], -1)
    arg = flat.argmax(axis=-1)
    values = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    taps = np.unravel_index(arg, kernel_shape)
    n, c = x.shape[:2]
    index = np.arange(n * c, dtype=np.int64).reshape(n, c, *(1,) * k)
    for i in range(k):
        start = _axis_grid(k, i, np.arange(out[i], dtype=np.int64) * s[i] - pb[i])
        index = index * x.shape[2 + i] + (start + taps[i] * d[i])
    return values, index


@KERNELS.register(ops.avg_pool)
def _avg_pool_kernel(x: np.ndarray, *, kernel_shape: Ints, strides: Ints | None,
                     pads: Ints | None, ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
    """Window mean (ONNX AveragePool).

    The divisor counts the window elements inside the input, or inside the padded input with
    ``count_include_pad``; positions a ceil-mode window reaches past the end padding never count.
    """
    k = len(kernel_shape)
    s, pb, pe, d = _geometry(k, strides, pads, None)
    out = _pool_out(x.shape[2:], kernel_shape, s, pb, pe, d, ceil_mode)
    win = _pool_windows(x, kernel_shape, s, pb, pe, d, out, 0.0)
    total = win.sum(axis=tuple(range(2 + k, 2 + 2 * k)))
    divisor = np.ones((1,) * (2 + k), dtype=x.dtype)
    for i in range(k):
        pos = np.arange(out[i])[:, None] * s[i] - pb[i] + np.arange(kernel_shape[i])[None, :]
        lo, hi = (-pb[i], x.shape[2 + i] + pe[i]) if count_include_pad else (0, x.shape[2 + i])
        count = ((pos >= lo) & (pos < hi)).sum(axis=1).astype(x.dtype)
        divisor = divisor * _axis_grid(k, i, count)
    return (total / divisor).astype(x.dtype, copy=False)


@KERNELS.register(ops.batch_norm)
def _batch_norm_kernel(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                       var: np.ndarray, *, epsilon: float) -> np.ndarray:
    """Inference batch norm over channel axis 1 (ONNX BatchNormalization, training_mode=0)."""
    # fold the statistics into one per-channel affine map: two passes over x instead of four
    mul = scale / np.sqrt(var + epsilon)
    add = bias - mean * mul
    shape = (-1, *(1,) * (x.ndim - 2))
    return x * mul.reshape(shape) + add.reshape(shape)


@KERNELS.register(ops.layer_norm)
def _layer_norm_kernel(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, *, axis: int,
                       epsilon: float) -> np.ndarray:
    """Normalise over axes [axis, rank), then scale and shift (ONNX LayerNormalization, Y only)."""
    axes = tuple(range(axis % x.ndim, x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    y = centered / np.sqrt(var + epsilon) * scale
    return y if bias is None else y + bias
