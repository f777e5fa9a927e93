"""NumPy kernels for lbdl_graph.ops.nn: matmul, convolutions, pooling and normalisation.

Convolutions are im2col (a strided window view, copied once) followed by one batched matmul
over the groups; transposed convolutions are one matmul followed by a col2im scatter-add with
one vectorised add per kernel position. Pools also loop over kernel positions, each step a
whole-tensor operation on a strided view, never over output pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

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


def _windows(xp: np.ndarray, kernel: Ints, strides: Ints, dilations: Ints) -> np.ndarray:
    """A strided view (N, C, *out, *kernel) of the windows of the padded input ``xp``."""
    k = len(kernel)
    eff = tuple(d * (kk - 1) + 1 for kk, d in zip(kernel, dilations, strict=True))
    view = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + k)))
    index = (slice(None), slice(None), *(slice(None, None, s) for s in strides),
             *(slice(None, None, d) for d in dilations))
    return view[index]


@KERNELS.register(ops.matmul)
def _matmul_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy matmul; 1-D @ 1-D gives a 0-d array rather than a scalar. NumPy promotes
    ml_dtypes' bfloat16 to float32, so narrow floats are rounded back to the input dtype."""
    out = np.asarray(np.matmul(a, b))
    return out if out.dtype == a.dtype else out.astype(a.dtype)


@KERNELS.register(ops.conv)
def _conv_kernel(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
                 strides: Ints | None, pads: Ints | None, dilations: Ints | None,
                 group: int) -> np.ndarray:
    """N-d grouped convolution (ONNX Conv) via im2col and one batched matmul."""
    k = x.ndim - 2
    s, pb, pe, d = _geometry(k, strides, pads, dilations)
    n = x.shape[0]
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    g, mg = group, m // group
    win = _windows(_pad(x, pb, pe, 0.0), kernel, s, d)
    out = win.shape[2:2 + k]
    # im2col as (G, C/G * K, N * O): one column per output pixel. Output pixels innermost keeps
    # the gather copy reading and writing runs of adjacent elements (3x faster than patch rows).
    win = win.reshape(n, g, cg, *out, *kernel)
    perm = (1, 2, *range(3 + k, 3 + 2 * k), 0, *range(3, 3 + k))
    cols = win.transpose(perm).reshape(g, cg * math.prod(kernel), n * math.prod(out))
    wm = w.reshape(g, mg, -1)
    y = wm[0] @ cols[0] if g == 1 else np.matmul(wm, cols)
    # (G, M/G, N, *O) -> (N, M, *O); the reshape copies into a contiguous result
    y = y.reshape(m, n, *out).swapaxes(0, 1).reshape(n, m, *out)
    if b is not None:
        y += b.reshape(m, *(1,) * k)
    return y


@KERNELS.register(ops.conv_transpose)
def _conv_transpose_kernel(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
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
    if cg == 1:
        taps = wm * xm  # depthwise: outer products, which batched matmul does ~10x slower
    elif g == 1:
        taps = (wm[0] @ xm[0])[None]
    else:
        taps = np.matmul(wm, xm)
    taps = taps.reshape(g, mg, *kernel, n, *ins)
    full = tuple(si * (ni - 1) + di * (ki - 1) + 1 + oi
                 for si, ni, di, ki, oi in zip(s, ins, d, kernel, op, strict=True))
    y = np.zeros((g, mg, n, *full), dtype=np.result_type(x, w))
    lead = (slice(None),) * 3
    # input pixel i, tap t lands at output i * s + t * d (before cropping the begin pads)
    for tap in np.ndindex(*kernel):
        dst = tuple(slice(t * di, t * di + si * (ni - 1) + 1, si)
                    for t, di, si, ni in zip(tap, d, s, ins, strict=True))
        src = (slice(None), slice(None), *tap)
        y[lead + dst] += taps[src]
    crop = tuple(slice(bi, fi - ei) for bi, fi, ei in zip(pb, full, pe, strict=True))
    y = y[lead + crop]
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


def _pool_taps(x: np.ndarray, kernel: Ints, s: Ints, pb: Ints, pe: Ints, d: Ints, out: Ints,
               fill: float) -> Iterator[tuple[Ints, np.ndarray]]:
    """Each kernel position with the strided view (N, C, *out) of the input elements it sees.

    The input is padded with ``fill``, plus whatever a ceil-mode window reaches past the end.
    """
    extra = tuple(max(0, (o - 1) * si + di * (ki - 1) + 1 - (n + bi + ei))
                  for o, si, di, ki, n, bi, ei in zip(out, s, d, kernel, x.shape[2:], pb, pe,
                                                      strict=True))
    xp = _pad(x, pb, tuple(e + x_ for e, x_ in zip(pe, extra, strict=True)), fill)
    for tap in np.ndindex(*kernel):
        index = tuple(slice(t * di, t * di + (o - 1) * si + 1, si)
                      for t, di, si, o in zip(tap, d, s, out, strict=True))
        window = (slice(None), slice(None), *index)
        yield tap, xp[window]


def _axis_grid(k: int, i: int, values: np.ndarray) -> np.ndarray:
    """``values`` laid along spatial axis ``i`` of an (N, C, *out) array."""
    return values.reshape((1, 1, *(-1 if j == i else 1 for j in range(k))))


@KERNELS.register(ops.max_pool)
def _max_pool_kernel(x: np.ndarray, *, kernel_shape: Ints, strides: Ints | None,
                     pads: Ints | None, ceil_mode: bool,
                     dilations: Ints | None) -> tuple[np.ndarray, np.ndarray]:
    """Window max and its flat row-major int64 index into ``x`` (ONNX MaxPool, storage_order 0).

    Ties pick the first window element in row-major order. NaN propagates as in ``np.max``:
    the first NaN of a window wins.
    """
    k = len(kernel_shape)
    s, pb, pe, d = _geometry(k, strides, pads, dilations)
    out = _pool_out(x.shape[2:], kernel_shape, s, pb, pe, d, ceil_mode)
    # One vectorised pass per kernel position; masked assignment (np.where, copyto) is ~5x
    # slower than arithmetic on random masks, so the winner's offset is selected arithmetically.
    has_nan = bool(np.isnan(x.max())) if x.size else False
    dims = x.shape[2:]
    row = [math.prod(dims[i + 1:]) for i in range(k)]  # row-major stride of each spatial axis
    taps = _pool_taps(x, kernel_shape, s, pb, pe, d, out, -np.inf)
    _, first = next(taps)
    best = first.copy()
    # flat offset of the winner inside its window; int32 halves the memory traffic
    offset = np.zeros(best.shape, dtype=np.int32 if math.prod(dims) < 2**31 else np.int64)
    step = np.empty_like(offset)
    for tap, v in taps:
        better = v > best
        if has_nan:
            better |= np.isnan(v) & ~np.isnan(best)
        delta = sum(t * di * r for t, di, r in zip(tap, d, row, strict=True))
        np.subtract(offset, delta, out=step)
        step *= better
        offset -= step
        np.maximum(best, v, out=best)
    n, c = x.shape[:2]
    index = np.arange(n * c, dtype=np.int64).reshape(n, c, *(1,) * k) * math.prod(dims)
    for i in range(k):
        start = np.arange(out[i], dtype=np.int64) * s[i] - pb[i]
        index = index + _axis_grid(k, i, start * row[i])
    index += offset
    return best, index


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
    taps = _pool_taps(x, kernel_shape, s, pb, pe, d, out, 0.0)
    _, first = next(taps)
    total = first.copy()
    for _, v in taps:
        total += v
    divisor = np.ones((1,) * (2 + k), dtype=x.dtype)
    for i in range(k):
        pos = np.arange(out[i])[:, None] * s[i] - pb[i] + np.arange(kernel_shape[i])[None, :]
        lo, hi = (-pb[i], x.shape[2 + i] + pe[i]) if count_include_pad else (0, x.shape[2 + i])
        count = ((pos >= lo) & (pos < hi)).sum(axis=1).astype(x.dtype)
        divisor = divisor * _axis_grid(k, i, count)
    total /= divisor
    return total


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
def _layer_norm_kernel(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None, *,
                       axis: int, epsilon: float) -> np.ndarray:
    """Normalise over axes [axis, rank), then scale and shift (ONNX LayerNormalization, Y only)."""
    axes = tuple(range(axis % x.ndim, x.ndim))
    y = x - x.mean(axis=axes, keepdims=True)
    var = np.mean(np.square(y), axis=axes, keepdims=True)
    # in-place updates of one buffer: this op runs on every transformer block
    y *= 1 / np.sqrt(var + epsilon)
    y *= scale
    if bias is not None:
        y += bias
    return y
