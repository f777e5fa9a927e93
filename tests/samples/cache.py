"""Samples of ``cache_attention`` (the shared KV cache); the oracle is a float64 NumPy formula
that concatenates each row's past with its new keys and values and masks causally. (ONNX
Runtime takes more than one new token with a past only at batch 1.)"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from tests.op_db import Arrays, OpSample

__all__ = ["SAMPLES"]

F32 = np.float32


def _inputs(n: int, t: int, h: int, dh: int, cap: int, lengths: tuple[int, ...]
            ) -> Callable[[np.random.Generator], Arrays]:
    def make(rng: np.random.Generator) -> Arrays:
        q, k, v = (rng.standard_normal((n, t, h * dh)).astype(F32) for _ in range(3))
        pk, pv = (rng.standard_normal((n, h, cap, dh)).astype(F32) for _ in range(2))
        seqlens = np.array([x - 1 for x in lengths], np.int32)
        return [q, k, v, pk, pv, seqlens, np.array(max(lengths), np.int32)]

    return make


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, pk: np.ndarray, pv: np.ndarray,
               seqlens: np.ndarray, total: np.ndarray, *, num_heads: int,
               scale: float | None = None) -> tuple[np.ndarray, ...]:
    n, t, e = q.shape
    dh = e // num_heads
    c = dh ** -0.5 if scale is None else scale
    out = np.zeros((n, t, e))
    present_k, present_v = np.zeros(pk.shape), np.zeros(pv.shape)  # zero after each row
    for r in range(n):
        past = int(seqlens[r]) + 1 - t
        for h in range(num_heads):
            cols = slice(h * dh, (h + 1) * dh)
            keys = np.concatenate([pk[r, h, :past], k[r, :, cols]]).astype(np.float64)
            vals = np.concatenate([pv[r, h, :past], v[r, :, cols]]).astype(np.float64)
            present_k[r, h, :past + t], present_v[r, h, :past + t] = keys, vals
            for i in range(t):
                s = keys[:past + i + 1] @ q[r, i, cols].astype(np.float64) * c
                w = np.exp(s - s.max())
                out[r, i, cols] = (w / w.sum()) @ vals[:past + i + 1]
    return out.astype(q.dtype), present_k.astype(pk.dtype), present_v.astype(pv.dtype)


def _sample(label: str, n: int, t: int, cap: int, lengths: tuple[int, ...], h: int = 2,
            dh: int = 8, **attrs: float) -> OpSample:
    return OpSample(ops.cache_attention, _inputs(n, t, h, dh, cap, lengths),
                    attrs={"num_heads": h, **attrs}, label=label, reference=_reference,
                    rtol=1e-5, atol=1e-5, grad=False)


SAMPLES: list[OpSample] = [
    _sample("decode", 1, 1, 6, (6,)),
    _sample("prefill", 1, 5, 5, (5,), h=3),
    _sample("two_new", 1, 2, 7, (6,), scale=0.2),
    _sample("rows_differ", 2, 1, 9, (5, 9), dh=16),
]
