"""The NumPy verification figures: ROC AUC against a pair count and scikit-learn, the best
threshold against a brute-force search, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.errors import InputError
from lbdl_graph.frontends.training.verification import (
    best_threshold,
    roc_auc,
    verification_accuracy,
)


def _data(n: int = 300, seed: int = 0, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return np.round(rng.standard_normal(n) + y, decimals), y  # rounding makes ties


def test_roc_auc_is_the_share_of_correctly_ordered_pairs() -> None:
    s, y = _data()
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = float(np.mean((diff > 0) + 0.5 * (diff == 0)))
    assert roc_auc(s, y) == pytest.approx(expected, rel=1e-12)


def test_roc_auc_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    for seed in range(3):
        s, y = _data(seed=seed, decimals=seed)
        assert roc_auc(s, y) == pytest.approx(metrics.roc_auc_score(y, s), rel=1e-12)


def test_roc_auc_extremes() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert roc_auc(np.ones(4), y) == 0.5


def test_best_threshold_is_the_best_cut() -> None:
    for seed in range(3):
        s, y = _data(n=200, seed=seed)
        t, acc = best_threshold(s, y)
        cuts = np.r_[np.unique(s), np.inf]
        brute = max(float(np.mean((s >= c) == y)) for c in cuts)
        assert acc == pytest.approx(brute) and verification_accuracy(s, y, t) == acc


def test_separable_pairs_are_all_called_right() -> None:
    s, y = np.array([-3.0, -2.5, -1.0, -0.5]), np.array([0, 0, 1, 1])
    t, acc = best_threshold(s, y)
    assert acc == 1.0 and -2.5 < t < -1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(InputError, match="3 scores but 2 labels"):
        roc_auc(np.zeros(3), np.zeros(2))
    with pytest.raises(InputError, match="needs both classes"):
        roc_auc(np.zeros(3), np.ones(3))
    with pytest.raises(InputError, match="labels must be 0"):
        best_threshold(np.zeros(2), np.array([0, 2]))
    with pytest.raises(InputError, match="not finite"):
        verification_accuracy(np.array([np.nan, 1.0]), np.array([0, 1]), 0.0)
    with pytest.raises(InputError, match="no pairs"):
        best_threshold(np.zeros(0), np.zeros(0))
