"""NumPy kernel of ``cache_attention``: each row's past and new keys/values in a fresh buffer
(zero after the row's length, as ONNX Runtime's GroupQueryAttention leaves a present it does not
share with its past), then the ``attention`` kernel over the filled positions, causal from each
row's offset."""

from __future__ import annotations

import math

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from . import KERNELS
from .fused import _attention_kernel

__all__: list[str] = []

Array = np.ndarray


def _heads(x: Array, h: int) -> Array:
    """(N, T, H*Dh) -> (N, H, T, Dh)."""
    n, t, e = x.shape
    return x.reshape(n, t, h, e // h).transpose(0, 2, 1, 3)


@KERNELS.register(ops.cache_attention)
def _cache_attention_kernel(q: Array, k: Array, v: Array, past_key: Array, past_value: Array,
                            seqlens: Array, total: Array, *, num_heads: int,
                            scale: float | None) -> tuple[Array, Array, Array]:
    """Row n writes its T new keys/values at ``seqlens[n] + 1 - T``; query i attends to the
    positions up to ``seqlens[n] + 1 - T + i``. The presents are new arrays (ONNX Runtime
    writes a bound buffer in place instead: the same values when the buffer was zero after
    the row's length, as a cache that only grows keeps it)."""
    n, t, _ = q.shape
    cap = past_key.shape[2]
    qh, kh, vh = _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads)
    c = 1.0 / math.sqrt(qh.shape[-1]) if scale is None else scale
    pk, pv = np.zeros_like(past_key), np.zeros_like(past_value)
    out = np.empty_like(qh)
    for r in range(n):
        length = int(seqlens[r]) + 1
        start = length - t
        if start < 0 or length > cap or length > int(total):
            raise ShapeError(f"cache_attention: row {r} has total length {length} with {t} new "
                             f"tokens, outside the cache of {cap} positions (total "
                             f"{int(total)})")
        pk[r, :, :start], pv[r, :, :start] = past_key[r, :, :start], past_value[r, :, :start]
        pk[r, :, start:length], pv[r, :, start:length] = kh[r], vh[r]
        above = np.arange(length)[None, :] > (start + np.arange(t))[:, None]
        bias = np.where(above, -np.inf, 0.0).astype(q.dtype)  # query i sees keys <= start + i
        out[r] = _attention_kernel(qh[r], pk[r, :, :length], pv[r, :, :length], bias, scale=c,
                                   causal=False)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3).reshape(q.shape)), pk, pv
