"""The Box–Muller sampler behind big normal weight draws: distribution, tails, determinism, odd
sizes and the chunked init that uses it."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.errors import OpError
from lbdl_graph.frontends import init, manual_seed
from lbdl_graph.frontends._box_muller import standard_normal_into


def _draw(seed: int, n: int, dt: type = np.float32) -> np.ndarray:
    out = np.zeros(n, dt)
    standard_normal_into(np.random.default_rng(seed), out)
    return out


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_samples_are_standard_normal(dt: type) -> None:
    stats = pytest.importorskip("scipy.stats")
    z = _draw(1, 400_001, dt)
    assert z.dtype == dt and np.isfinite(z).all()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # the cosine half and the sine half are each normal, and uncorrelated
    half = z.size // 2
    assert stats.kstest(z[:half], "norm").pvalue > 1e-3
    assert abs(float(np.corrcoef(z[:half], z[half + 1:])[0, 1])) < 0.01
    assert abs(float(np.mean(z**4)) - 3.0) < 0.05  # normal kurtosis


def test_tail_mass_is_normal() -> None:
    z = _draw(2, 4_000_000)
    # the largest of 4M normals lies near 5.3; the float64 radius is bounded by 8.58
    assert 4.5 < float(np.abs(z).max()) < 8.6
    assert abs(float((np.abs(z) > 3).mean()) - 2.7e-3) < 2e-4


def test_deterministic_per_seed_and_blocks_independent_of_size() -> None:
    np.testing.assert_array_equal(_draw(5, 1001), _draw(5, 1001))
    assert not np.array_equal(_draw(5, 1001), _draw(6, 1001))
    assert _draw(5, 1).shape == (1,) and np.isfinite(_draw(5, 3)).all()
    standard_normal_into(np.random.default_rng(0), np.zeros(0, np.float32))


def test_rejects_arrays_it_cannot_fill() -> None:
    with pytest.raises(OpError, match="1-D contiguous"):
        standard_normal_into(np.random.default_rng(0), np.zeros((2, 2), np.float32))
    with pytest.raises(OpError, match="float32/float64"):
        standard_normal_into(np.random.default_rng(0), np.zeros(4, np.int32))


def test_big_init_draws_are_normal_with_the_requested_moments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init, "_CHUNK", 1 << 12)
    manual_seed(7)
    w = np.zeros((300, 1001), np.float32)
    init.normal_(w, 0.25, 0.02)
    assert abs(float(w.mean()) - 0.25) < 2e-4 and abs(float(w.std()) - 0.02) < 2e-4
    manual_seed(7)
    again = np.zeros((300, 1001), np.float32)
    init.normal_(again, 0.25, 0.02)
    np.testing.assert_array_equal(w, again)
