"""NumPy kernels for lbdl_graph.ops.random: fused, vectorised versions of the decompositions.

Each kernel returns bit-for-bit what the op's graph decomposition returns (tests/test_random.py
checks it). The hash runs in place on uint32 instead of int64: every intermediate stays below
2**31 except the products ``x * MIX_MUL``, and those are masked to 31 bits right away, which
wrapping modulo 2**32 does not change. Half the memory traffic, the same bits.
"""

from __future__ import annotations

import math

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, dtype
from lbdl_graph.errors import ShapeError
from lbdl_graph.ops.random import (
    MASK31,
    MIX_MUL,
    SALT_NORMAL_1,
    SALT_NORMAL_2,
    key_streams_numpy,
    uniform_bits,
)

from . import KERNELS
from .elementwise import float_math

__all__ = ["hash_bits"]

Array = np.ndarray


def _mix_inplace(x: Array, tmp: Array) -> None:
    """The hash's mixing function on a uint32 array, in place (``tmp`` is scratch)."""
    for last in (False, False, True):
        np.right_shift(x, 16, out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        if last:
            return
        np.multiply(x, MIX_MUL, out=x)  # wraps modulo 2**32; the mask keeps the low 31 bits
        np.bitwise_and(x, MASK31, out=x)


def hash_bits(shape: tuple[int, ...], key: Array, salt: int) -> Array:
    """31 random bits (uint32) per element of ``shape``; equals ``hash_numpy`` on the flat
    element index."""
    if key.shape != (2,) or key.dtype != np.int64:
        raise ShapeError(f"random key must be i64[2] (seed, counter), got {key.dtype}"
                         f"{list(key.shape)}")
    k1, k2 = (int(k) for k in key_streams_numpy(key, salt))
    n = math.prod(shape)
    if n <= MASK31 + 1:
        x = np.arange(n, dtype=np.uint32)
    else:  # the graph masks the int64 index to 31 bits, so indices repeat past 2**31
        x = (np.arange(n, dtype=np.int64) & MASK31).astype(np.uint32)
    tmp = np.empty_like(x)
    np.bitwise_xor(x, k1, out=x)
    _mix_inplace(x, tmp)
    np.add(x, k2, out=x)
    np.bitwise_and(x, MASK31, out=x)
    _mix_inplace(x, tmp)
    return x.reshape(shape)


def _uniform(shape: tuple[int, ...], key: Array, salt: int, dt: DType) -> Array:
    """The decomposition's uniform numbers: ``(bits >> (31-n)) * 2**-n`` in ``dt``."""
    n = uniform_bits(dt)
    top = hash_bits(shape, key, salt)
    np.right_shift(top, 31 - n, out=top)
    return np.asarray(np.multiply(top.astype(dt.numpy), np.asarray(2.0**-n, dtype=dt.numpy)))


@KERNELS.register(ops.random_uniform)
def _random_uniform_kernel(like: Array, key: Array, *, salt: int, dtype: DType) -> Array:
    """Uniform [0, 1) numbers of like's shape, a pure function of (key, salt, index)."""
    return _uniform(like.shape, key, salt, dtype)


@KERNELS.register(ops.random_normal)
def _random_normal_kernel(like: Array, key: Array, *, salt: int, dtype: DType) -> Array:
    """Standard normal numbers of like's shape (Box-Muller on two hashed streams)."""
    u1 = _uniform(like.shape, key, salt ^ SALT_NORMAL_1, dtype)
    u2 = _uniform(like.shape, key, salt ^ SALT_NORMAL_2, dtype)
    t = dtype.numpy.type
    # the same ops in the same dtypes as the decomposition, so the bits agree
    log1m = float_math(np.log, np.subtract(t(1.0), u1))
    radius = float_math(np.sqrt, np.multiply(t(-2.0), log1m))
    return np.asarray(np.multiply(radius, float_math(np.cos, np.multiply(t(2 * math.pi), u2))))


@KERNELS.register(ops.dropout)
def _dropout_kernel(x: Array, key: Array, *, ratio: float, salt: int) -> Array:
    """Zero each element with probability ``ratio`` and scale the rest by 1/(1-ratio)."""
    if not 0.0 <= ratio < 1.0:
        raise ShapeError(f"dropout ratio must be in [0, 1), got {ratio}")
    dt = dtype(x.dtype)
    n = uniform_bits(dt)
    # u = (bits >> (31-n)) * 2**-n is exact in dt, so u >= ratio (both in dt) holds exactly
    # when bits >= ceil(ratio * 2**n) << (31-n): one integer compare replaces shift, cast,
    # multiply and float compare.
    threshold = math.ceil(float(np.asarray(ratio, dtype=dt.numpy)) * 2.0**n) << (31 - n)
    keep = hash_bits(x.shape, key, salt) >= threshold
    scale = np.asarray(1.0 / (1.0 - ratio), dtype=dt.numpy)
    # x * keep * scale, in the decomposition's order: a dropped -x or inf gives -0 or NaN too
    out = np.asarray(np.multiply(x, keep.astype(dt.numpy)))
    return np.multiply(out, scale, out=out)
