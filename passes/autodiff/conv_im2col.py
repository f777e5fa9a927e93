"""The weight gradient of an ungrouped convolution as im2col + batched MatMul.

``w_bar[m, c, k] = sum_{n, o} gy[n, m, o] x_pad[n, c, o s + k d]``. The swapped-axes form (a conv
of x, channels as batch, with gy as a kernel as large as the output) is exact but slow on ONNX
Runtime's CPU provider, which runs that huge kernel as an im2col over every pixel of a tiny
result. Here the patches ``patches[n, (c, k), o]`` are built once, by a depthwise conv of x with
one-hot kernels (output channel ``c*K + k`` is x[c] at kernel offset k: same strides, pads and
dilations as the forward conv; ``PATCHES = "slice"`` builds them from one strided Slice per
offset instead, 25-30% slower on ORT), then ``w_bar^T = sum_n patches[n] @ gy[n]^T`` is one
batched MatMul and a ReduceSum over the batch. The patches take ``prod(kernel)`` times the
input's memory, so the form is used while that stays under ``MAX_PATCH_ELEMENTS`` per sample,
and for kernels of at most ``MAX_KERNEL_ELEMENTS`` taps (measured per shape, see there).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .helpers import static_dims

__all__ = ["MAX_PATCH_ELEMENTS", "im2col_fits", "im2col_weight_grad"]

Ints = tuple[int, ...]
MAX_PATCH_ELEMENTS = 1 << 22  # per sample: C * prod(kernel) * prod(output)
# the swapped-axes conv's GEMM has prod(kernel) output columns: too few for small kernels, fine
# from 5x5 on (ORT CPU, 1 thread: 3x3 im2col 1.1-1.7x faster on ResNet-tiny's and LeNet-like
# shapes; 5x5 0.6-1.0x, so those keep the conv form)
MAX_KERNEL_ELEMENTS = 9
PATCHES = "conv"  # how the patches are built: "conv" (one-hot depthwise conv) or "slice"


def im2col_fits(x: Value, gy: Value, kernel: Sequence[int], group: int) -> bool:
    """Whether the im2col form applies: no groups, at most ``MAX_KERNEL_ELEMENTS`` kernel
    taps, static channel and spatial dims, patches of at most ``MAX_PATCH_ELEMENTS`` a sample."""
    if group != 1 or x.ndim < 3 or math.prod(kernel) > MAX_KERNEL_ELEMENTS:
        return False
    dims = [*x.shape[1:], *gy.shape[1:]]
    if not all(isinstance(d, int) for d in dims):
        return False
    out = [int(d) for d in gy.shape[2:]]
    return int(x.shape[1]) * math.prod(kernel) * math.prod(out) <= MAX_PATCH_ELEMENTS


def _slices(x: Value, kernel: Sequence[int], win: tuple[Ints, Ints, Ints],
            out: Ints) -> list[Value]:
    """One strided Slice of the padded ``x`` per kernel offset, each (N, C, *O)."""
    s, p, d = win
    k = len(kernel)
    xp = ops.pad(x, pads=(0, 0, *p[:k], 0, 0, *p[k:])) if any(p) else x
    size = static_dims(xp.shape[2:], "conv weight gradient (input spatial dims)")
    axes = tuple(range(2, 2 + k))
    cols: list[Value] = []
    for off in itertools.product(*(range(n) for n in kernel)):
        starts = tuple(off[i] * d[i] for i in range(k))
        ends = tuple(starts[i] + s[i] * (out[i] - 1) + 1 for i in range(k))
        if any(starts) or any(st != 1 for st in s) or ends != size:
            cols.append(ops.slice_(xp, starts=starts, ends=ends, axes=axes, steps=s))
        else:
            cols.append(xp)
    return cols


def im2col_weight_grad(x: Value, gy: Value, kernel: Sequence[int],
                       win: tuple[Ints, Ints, Ints]) -> Value:
    """``w_bar`` of shape (M, C, *kernel) for ``y = conv(x, w)`` with ``win`` = (strides,
    pads, dilations); ``x`` is (N, C, *S), ``gy`` is (N, M, *O), N may be symbolic."""
    s, p, d = win
    k = len(kernel)
    c, m = static_dims([x.shape[1], gy.shape[1]], "conv weight gradient channels")
    out = static_dims(gy.shape[2:], "conv weight gradient (output spatial dims)")
    kk = math.prod(kernel)
    if PATCHES == "conv" and kk > 1:
        # a depthwise conv with one-hot kernels: output channel c*K + k is x[c] at offset k
        eye = np.eye(kk, dtype=x.dtype.numpy).reshape(kk, 1, *kernel)
        ones = ops.constant(value=np.tile(eye, (c, 1, *(1,) * k)))
        col = ops.conv(x, ones, None, strides=s, pads=p, dilations=d, group=c)
        if tuple(col.shape[2:]) != out:  # a conv_transpose's output padding: extra windows
            col = ops.slice_(col, starts=(0,) * k, ends=out, axes=tuple(range(2, 2 + k)))
        cols = [col]
    else:
        cols = _slices(x, kernel, win, out)
    pixels = math.prod(out)
    if len(cols) == 1:
        patches = ops.reshape(cols[0], shape=(0, c * kk, pixels))  # (N, C*K, P)
    else:
        stacked = ops.concat(*(ops.unsqueeze(v, axes=(2,)) for v in cols), axis=2)
        patches = ops.reshape(stacked, shape=(0, c * kk, pixels))  # (N, C*K, P)
    g2 = ops.reshape(gy, shape=(0, m, pixels))  # (N, M, P)
    # patches @ gy^T, (N, C*K, M): the wide C*K side as the rows runs 1.1-1.7x faster on ORT's
    # CPU GEMM than gy @ patches^T, whose M rows are few (8 in ResNet-tiny's first blocks)
    per_sample = ops.matmul(patches, ops.transpose(g2, perm=(0, 2, 1)))
    total = ops.reduce_sum(per_sample, axes=(0,), keepdims=False)  # (C*K, M)
    res: Value = ops.reshape(ops.transpose(total, perm=(1, 0)), shape=(m, c, *kernel))
    return res
