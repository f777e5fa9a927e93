"""Random ops: fused kernels vs their decompositions (bit for bit) and statistical sanity.

The statistical bounds are 6 standard errors wide; inputs are deterministic (fixed keys), so the
tests cannot flake, yet a broken hash or a wrong transform lands far outside them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbdl_graph import ops
from lbdl_graph.backends.numpy import KERNELS, Interpreter
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import LbdlError, ShapeError
from lbdl_graph.ops.random import MASK31, hash_numpy, uniform_bits
from tests.samples.random import run_decomposition

N = 200_000


def _key(seed: int, counter: int) -> np.ndarray:
    return np.asarray([seed, counter], dtype=np.int64)


def _kernel(op: ops.OpDef, *arrays: np.ndarray, **attrs: object) -> np.ndarray:
    out = KERNELS[op](*arrays, **op.check_attrs(attrs))
    assert isinstance(out, np.ndarray)
    return out


def _bytes_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Equal bit patterns (stricter than ==: tells -0.0 from 0.0)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("dt", ["float32", "float64", "float16", "bfloat16", "float8_e4m3fn"])
@pytest.mark.parametrize("shape", [(5, 7), (), (0, 3), (1, 1, 9)], ids=str)
@pytest.mark.parametrize("op", [ops.random_uniform, ops.random_normal], ids=lambda o: o.name)
def test_generator_kernel_equals_decomposition_bitwise(op: ops.OpDef, shape: tuple[int, ...],
                                                       dt: str) -> None:
    like = np.zeros(shape, dtype=np.float32)
    for key, salt in ((_key(0, 0), 0), (_key(123456789, 42), 17), (_key(-5, 2**50), -(2**33))):
        _bytes_equal(_kernel(op, like, key, salt=salt, dtype=dt),
                     run_decomposition(op, like, key, salt=salt, dtype=dt))


@pytest.mark.parametrize("dt", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_dropout_kernel_equals_decomposition_bitwise(ratio: float, dt: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((13, 11)).astype(dtype(dt).numpy)
    x.flat[:6] = [np.inf, -np.inf, -0.0, 0.0, -1.0, 3.0]
    key = _key(99, 3)
    _bytes_equal(_kernel(ops.dropout, x, key, ratio=ratio, salt=4),
                 run_decomposition(ops.dropout, x, key, ratio=ratio, salt=4))


def test_dropout_nan_input_matches_decomposition() -> None:
    x = np.full(64, np.nan, dtype=np.float32)
    got = _kernel(ops.dropout, x, _key(1, 2), ratio=0.5)
    want = run_decomposition(ops.dropout, x, _key(1, 2), ratio=0.5)
    np.testing.assert_array_equal(got, want)  # NaN * 0 is NaN on both paths


def test_hash_bits_equal_the_reference_hash() -> None:
    from lbdl_graph.backends.numpy.kernels.random import hash_bits

    key, salt = _key(7, 11), 5
    bits = hash_bits((4, 250), key, salt)
    want = hash_numpy(np.arange(1000).reshape(4, 250), key, salt)
    np.testing.assert_array_equal(bits.astype(np.int64), want)
    assert bits.max() <= MASK31


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_uniform_statistics(dt: str) -> None:
    u = _kernel(ops.random_uniform, np.zeros(N), _key(2024, 1), dtype=dt).astype(np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < 6 * math.sqrt(1 / 180 / N)  # Var of (U-1/2)^2 is 1/180
    hist = np.bincount((u * 10).astype(int), minlength=10) / N
    assert np.abs(hist - 0.1).max() < 6 * math.sqrt(0.09 / N)
    # neighbouring elements must not be correlated (the index is hashed, not stepped)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 6 / math.sqrt(N)


def test_uniform_grid_is_24_bits() -> None:
    u = _kernel(ops.random_uniform, np.zeros(4096), _key(3, 3)).astype(np.float64)
    k = u * 2**24
    np.testing.assert_array_equal(k, np.round(k))
    assert len(np.unique(u)) > 4000  # the 24 bits really vary


@pytest.mark.parametrize("dt", ["float16", "bfloat16", "float8_e4m3fn"])
def test_narrow_float_uniform_stays_in_unit_interval(dt: str) -> None:
    u = _kernel(ops.random_uniform, np.zeros(20_000), _key(8, 8), dtype=dt).astype(np.float64)
    n = uniform_bits(dtype(dt))
    assert np.isfinite(u).all() and u.min() >= 0.0 and u.max() == 1.0 - 2.0**-n
    assert abs(u.mean() - (0.5 - 2.0 ** (-n - 1))) < 6 * math.sqrt(1 / 12 / 20_000)


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_normal_statistics(dt: str) -> None:
    z = _kernel(ops.random_normal, np.zeros(N), _key(77, 5), salt=9,
                dtype=dt).astype(np.float64)
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 6 / math.sqrt(N)
    assert abs(z.var() - 1.0) < 6 * math.sqrt(2 / N)
    inside = np.mean(np.abs(z) < 1.0)
    p = math.erf(1 / math.sqrt(2))
    assert abs(inside - p) < 6 * math.sqrt(p * (1 - p) / N)
    assert abs(np.mean(z**3)) < 6 * math.sqrt(15 / N)  # symmetric: third moment ~ 0
    assert abs(np.mean(z**4) - 3.0) < 6 * math.sqrt(96 / N)  # Gaussian tails: kurtosis 3


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8])
def test_dropout_keep_rate_and_scaling(ratio: float) -> None:
    x = np.random.default_rng(0).uniform(0.5, 2.0, N).astype(np.float32)
    y = _kernel(ops.dropout, x, _key(5, 6), ratio=ratio, salt=1)
    kept = y != 0
    assert abs(kept.mean() - (1 - ratio)) < 6 * math.sqrt(ratio * (1 - ratio) / N)
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(1 - ratio), rtol=1e-6)


def test_dropout_ratio_zero_keeps_everything() -> None:
    x = np.random.default_rng(0).standard_normal((8, 9)).astype(np.float32)
    np.testing.assert_array_equal(_kernel(ops.dropout, x, _key(1, 1), ratio=0.0), x)


def _mask(seed: int, counter: int, salt: int) -> np.ndarray:
    return _kernel(ops.dropout, np.ones(4096, np.float32), _key(seed, counter), salt=salt) != 0


def test_same_key_and_salt_give_identical_masks() -> None:
    np.testing.assert_array_equal(_mask(1, 2, 3), _mask(1, 2, 3))


@pytest.mark.parametrize("other", [(1, 2, 4), (1, 3, 3), (2, 2, 3), (1 + 2**31, 2, 3)],
                         ids=["salt", "counter", "seed", "seed_high_bits"])
def test_different_salt_counter_or_seed_give_different_masks(other: tuple[int, int, int]
                                                              ) -> None:
    a, b = _mask(1, 2, 3), _mask(*other)
    if other[0] == 1 + 2**31:
        # the hash keeps 31 bits of the seed, so seeds differing only above bit 30 collide
        np.testing.assert_array_equal(a, b)
        return
    agree = np.mean(a == b)
    assert abs(agree - 0.5) < 6 * math.sqrt(0.25 / a.size)  # independent masks agree half the time


def test_streams_of_one_key_are_uncorrelated() -> None:
    like, key = np.zeros(N, np.float32), _key(10, 20)
    u1 = _kernel(ops.random_uniform, like, key, salt=0).astype(np.float64)
    u2 = _kernel(ops.random_uniform, like, key, salt=1).astype(np.float64)
    assert abs(np.corrcoef(u1, u2)[0, 1]) < 6 / math.sqrt(N)


def test_dropout_is_identity_in_evaluation_mode() -> None:
    b = GraphBuilder("drop")
    x = b.input("x", "float32", (4, 5))
    key = b.input("key", "int64", (2,))
    with b:
        y = ops.dropout(x, key, ratio=0.5)
    graph = b.build([y])
    xs = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    feeds = {"x": xs, "key": _key(1, 2)}
    (train,) = Interpreter(graph).run(feeds).values()
    (evaluate,) = Interpreter(graph, training=False).run(feeds).values()
    np.testing.assert_array_equal(evaluate, xs)
    assert (train == 0).any() and not np.array_equal(train, xs)


def test_bad_key_is_rejected() -> None:
    with pytest.raises(ShapeError, match="i64\\[2\\]"):
        _kernel(ops.random_uniform, np.zeros(3), np.zeros(3, np.int64))
    with pytest.raises(ShapeError, match="i64\\[2\\]"):
        _kernel(ops.dropout, np.zeros(3, np.float32), np.zeros(2, np.int32))
    b = GraphBuilder("bad")
    x, key = b.input("x", "float32", (3,)), b.input("key", "int32", (2,))
    with b, pytest.raises(LbdlError, match="random key"):
        ops.dropout(x, key)


def test_dropout_rejects_ratio_one() -> None:
    with pytest.raises(ShapeError, match="ratio"):
        _kernel(ops.dropout, np.zeros(3, np.float32), _key(0, 0), ratio=1.0)
