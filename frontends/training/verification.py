"""Figures of a verification model (same / different pairs) in NumPy: ROC AUC, the threshold
that best separates labelled pairs, and the accuracy at a given threshold.

``scores`` are larger for pairs believed to match (pass ``-distance`` for a Siamese
distance); ``labels`` are 1 for a matching pair and 0 otherwise.
"""

from __future__ import annotations

import numpy as np

from lbdl_graph.errors import InputError

__all__ = ["best_threshold", "roc_auc", "verification_accuracy"]


def _check(scores: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if len(s) != len(y):
        raise InputError(f"{what}: {len(s)} scores but {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise InputError(f"{what}: labels must be 0 (different) or 1 (same), got "
                         f"{sorted(set(y.tolist()) - {0, 1})[:5]}")
    if not np.isfinite(s).all():
        raise InputError(f"{what}: {int((~np.isfinite(s)).sum())} scores are not finite")
    return s, y.astype(bool)


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``s``, tied values sharing the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]  # each run of equal values is [start, end)
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random matching pair scores above a
    random non-matching one, ties counting one half (the Mann-Whitney U statistic)."""
    s, y = _check(scores, labels, "roc_auc")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"roc_auc needs both classes, got {n_pos} matching and {n_neg} "
                         "non-matching pairs")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def verification_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Share of pairs called correctly by ``score >= threshold`` -> same."""
    s, y = _check(scores, labels, "verification_accuracy")
    if len(s) == 0:
        raise InputError("verification_accuracy: no pairs")
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold of highest accuracy on these pairs and that accuracy: every cut between
    two distinct sorted scores is tried (midpoints, plus one below and one above all)."""
    s, y = _check(scores, labels, "best_threshold")
    if len(s) == 0:
        raise InputError("best_threshold: no pairs")
    values = np.unique(s)  # ascending
    cuts = np.r_[values[0] - 1.0, (values[1:] + values[:-1]) / 2.0, values[-1] + 1.0]
    # accuracy(t) = (#same with s >= t + #different with s < t) / n, counted by search
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    same_above = len(pos) - np.searchsorted(pos, cuts, side="left")
    diff_below = np.searchsorted(neg, cuts, side="left")
    acc = (same_above + diff_below) / len(s)
    i = int(np.argmax(acc))
    return float(cuts[i]), float(acc[i])
