"""Counter-based random numbers built from integer graph ops.

A random tensor is a pure function of ``(key, salt, element index)``: ``key`` is an int64 pair
``(seed, counter)`` that the training step advances, ``salt`` tells apart the random streams of
one step (one per dropout layer). The hash uses only int64 multiply, add, bitwise and/xor and
division by powers of two on values below 2**31, so no operation overflows and every backend
(NumPy, ONNX Runtime on CPU or CUDA) produces bit-identical bits. ONNX's own random ops take a
fixed seed attribute and cannot serve a training loop.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from ..dtypes import DType, float32, int64
from ..errors import ShapeError
from ..opdef import Attr, Trait, defop
from ..types import TensorType
from ._rules import require

__all__ = ["MASK31", "MIX_MUL", "hash_numpy", "key_streams_numpy", "uniform_bits"]

MASK31 = 2**31 - 1
MIX_MUL = 0x45D9F3B  # < 2**27, so (x < 2**31) * MIX_MUL < 2**58 never overflows int64
SALT_NORMAL_1 = 0x1B873593
SALT_NORMAL_2 = 0x2C1B3C6D
KEY2_XOR = 0x2545F491


def _mix_np(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> 16)
    x = (x * MIX_MUL) & MASK31
    x = x ^ (x >> 16)
    x = (x * MIX_MUL) & MASK31
    return x ^ (x >> 16)


def key_streams_numpy(key: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """The two per-stream keys derived from ``key = (seed, counter)`` and ``salt``."""
    seed, counter = (np.int64(v) & MASK31 for v in np.asarray(key, dtype=np.int64)[:2])
    s = _mix_np(np.int64(salt & MASK31))
    k1 = _mix_np(seed ^ _mix_np(counter ^ s))
    k2 = _mix_np(k1 ^ KEY2_XOR)
    return k1, k2


def hash_numpy(index: np.ndarray, key: np.ndarray, salt: int) -> np.ndarray:
    """Reference NumPy version of the graph hash: 31 random bits per element index."""
    k1, k2 = key_streams_numpy(key, salt)
    x = _mix_np((index.astype(np.int64) & MASK31) ^ k1)
    return _mix_np((x + k2) & MASK31)


# ---------------------------------------------------------------- graph decompositions


def _c(v: int) -> Any:
    from . import constant

    return constant(value=np.asarray(v, dtype=np.int64))


def _mix(x: Any) -> Any:
    from . import bitwise_and, bitwise_xor, div, mul

    shift = _c(2**16)
    x = bitwise_xor(x, div(x, shift))
    x = bitwise_and(mul(x, _c(MIX_MUL)), _c(MASK31))
    x = bitwise_xor(x, div(x, shift))
    x = bitwise_and(mul(x, _c(MIX_MUL)), _c(MASK31))
    return bitwise_xor(x, div(x, shift))


def _hash(like: Any, key: Any, salt: int) -> Any:
    from . import add, bitwise_and, bitwise_xor, gather, iota_like

    m = _c(MASK31)
    seed = bitwise_and(gather(key, _c(0), axis=0), m)
    counter = bitwise_and(gather(key, _c(1), axis=0), m)
    s = _mix(_c(salt & MASK31))
    k1 = _mix(bitwise_xor(seed, _mix(bitwise_xor(counter, s))))
    k2 = _mix(bitwise_xor(k1, _c(KEY2_XOR)))
    x = _mix(bitwise_xor(bitwise_and(iota_like(like), m), k1))
    return _mix(bitwise_and(add(x, k2), m))


def uniform_bits(dt: DType) -> int:
    """How many hash bits a uniform number of float type ``dt`` uses: 24, or fewer for the
    narrow floats, so that every value ``k * 2**-n`` is exact in ``dt`` and stays below 1."""
    return min(24, int(ml_dtypes.finfo(dt.numpy).nmant) + 1)


def _uniform_from_bits(bits: Any, dt: DType) -> Any:
    from . import cast, constant, div, mul

    n = uniform_bits(dt)
    top = div(bits, _c(2 ** (31 - n)))
    return mul(cast(top, to=dt), constant(value=np.asarray(2.0**-n, dtype=dt.numpy)))


def _random_uniform_decompose(like: Any, key: Any, *, salt: int, dtype: DType) -> Any:
    return _uniform_from_bits(_hash(like, key, salt), dtype)


def _random_normal_decompose(like: Any, key: Any, *, salt: int, dtype: DType) -> Any:
    from . import constant, cos, log, mul, sqrt, sub

    u1 = _uniform_from_bits(_hash(like, key, salt ^ SALT_NORMAL_1), dtype)
    u2 = _uniform_from_bits(_hash(like, key, salt ^ SALT_NORMAL_2), dtype)

    def c(v: float) -> Any:
        return constant(value=np.asarray(v, dtype=dtype.numpy))

    radius = sqrt(mul(c(-2.0), log(sub(c(1.0), u1))))
    return mul(radius, cos(mul(c(2 * math.pi), u2)))


def _dropout_decompose(x: Any, key: Any, *, ratio: float, salt: int) -> Any:
    from . import cast, constant, greater_equal, mul

    dt = x.type.dtype
    u = _random_uniform_decompose(x, key, salt=salt, dtype=dt)
    keep = cast(greater_equal(u, constant(value=np.asarray(ratio, dtype=dt.numpy))), to=dt)
    scale = constant(value=np.asarray(1.0 / (1.0 - ratio), dtype=dt.numpy))
    return mul(mul(x, keep), scale)


def _key_check(key: TensorType) -> None:
    if key.dtype != int64 or tuple(key.shape) != (2,):
        raise ShapeError(f"random key must be i64[2] (seed, counter), got {key}")


def _random_rule(like: TensorType, key: TensorType, *, salt: int, dtype: DType) -> TensorType:
    _key_check(key)
    require(TensorType(dtype, ()), "dtype", kinds=("float",))
    return TensorType(dtype, like.shape)


_RANDOM_ATTRS = (Attr("salt", "int", 0), Attr("dtype", "dtype", float32))
random_uniform = defop(
    "random_uniform", ("like", "key"), infer=_random_rule, attrs=_RANDOM_ATTRS,
    traits=(Trait.STOCHASTIC,), decompose=_random_uniform_decompose,
    doc="uniform [0, 1) numbers of like's shape from the counter-based hash (24-bit grid; "
        "fewer bits for float16/bfloat16/float8, see uniform_bits)")
random_normal = defop(
    "random_normal", ("like", "key"), infer=_random_rule, attrs=_RANDOM_ATTRS,
    traits=(Trait.STOCHASTIC,), decompose=_random_normal_decompose,
    doc="standard normal numbers of like's shape (Box-Muller on two hashed streams)")


def _dropout_rule(x: TensorType, key: TensorType, *, ratio: float, salt: int) -> TensorType:
    require(x, "input", kinds=("float",))
    _key_check(key)
    if not 0.0 <= ratio < 1.0:
        raise ShapeError(f"dropout ratio must be in [0, 1), got {ratio}")
    return x


dropout = defop(
    "dropout", ("x", "key"), infer=_dropout_rule,
    attrs=(Attr("ratio", "float", 0.5), Attr("salt", "int", 0)),
    traits=(Trait.STOCHASTIC, Trait.DIFFERENTIABLE), decompose=_dropout_decompose,
    doc="zero each element with probability ratio (mask from the counter-based hash), scale "
        "the rest by 1/(1-ratio)")
