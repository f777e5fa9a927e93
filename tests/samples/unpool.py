"""Samples of ``max_unpool``: a max_pool's values written back at its indices.

The indices come from a real (non-overlapping) max pooling of a random input, so they are
distinct, as the max_pool VJP produces them; the oracle writes element by element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph import ops
from tests.op_db import Arrays, OpSample
from tests.op_db import tol as _tol

__all__ = ["SAMPLES"]


def _windows(x: np.ndarray, k: tuple[int, ...]) -> np.ndarray:
    """Flat index of each window's first maximum, for windows that tile ``x`` (stride = k)."""
    out_shape = (*x.shape[:2], *[n // kk for n, kk in zip(x.shape[2:], k, strict=True)])
    idx = np.empty(out_shape, dtype=np.int64)
    for pos in np.ndindex(*out_shape):
        n, c, *o = pos
        sl = (n, c, *[slice(i * kk, (i + 1) * kk) for i, kk in zip(o, k, strict=True)])
        win = x[sl]
        local = np.unravel_index(int(np.argmax(win)), win.shape)
        full = (n, c, *[i * kk + j for i, kk, j in zip(o, k, local, strict=True)])
        idx[pos] = np.ravel_multi_index(full, x.shape)
    return idx


def _make(shape: tuple[int, ...], k: tuple[int, ...], dt: type
          ) -> Any:
    def make(rng: np.random.Generator) -> Arrays:
        x = rng.standard_normal(shape).astype(dt)
        idx = _windows(x, k)
        return [rng.standard_normal(idx.shape).astype(dt), idx, np.zeros(shape, dtype=dt)]

    return make


def _reference(x: np.ndarray, indices: np.ndarray, like: np.ndarray, **_: Any) -> np.ndarray:
    out = np.zeros(like.shape, dtype=x.dtype)
    for pos in np.ndindex(*x.shape):
        out[np.unravel_index(int(indices[pos]), like.shape)] = x[pos]
    return out


def _sample(label: str, shape: tuple[int, ...], k: tuple[int, ...],
            dt: type = np.float32) -> OpSample:
    return OpSample(ops.max_unpool, _make(shape, k, dt), attrs={"kernel_shape": k, "strides": k},
                    label=label, reference=_reference, grad_inputs=[0], **_tol(dt))


SAMPLES: list[OpSample] = [
    _sample("2d_lenet", (2, 3, 6, 6), (3, 3)),
    _sample("1d", (2, 2, 8), (2,)),
    _sample("3d_f64", (1, 2, 4, 4, 6), (2, 2, 3), np.float64),
]
