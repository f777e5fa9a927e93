"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus) and a
repetition penalty, with a seeded NumPy ``Generator`` so that a seed gives the same text.

The order is Hugging Face's: repetition penalty, temperature, top-k, top-p, then a draw from the
softmax (or the argmax when ``temperature == 0``). Work is done in float64 per batch row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lbdl_graph.errors import GenerationError

__all__ = ["SamplingConfig", "apply_repetition_penalty", "choose", "filter_top_k",
           "filter_top_p", "seen_tokens"]


@dataclass(frozen=True)
class SamplingConfig:
    """How to choose tokens.

    Attributes:
        temperature: 0 is greedy (argmax); > 0 divides the logits before sampling.
        top_k: keep the k most likely tokens (None: all).
        top_p: keep the smallest set of most likely tokens whose probability reaches p
            (None or 1.0: all).
        repetition_penalty: > 1 discourages tokens already in the sequence (CTRL's rule:
            positive logits are divided by it, negative ones multiplied).
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        t, p, r = self.temperature, self.top_p, self.repetition_penalty
        if not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise GenerationError(f"temperature must be a finite number >= 0 (0 = greedy), got "
                                  f"{t!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool)
                                       or not isinstance(self.top_k, int) or self.top_k < 1):
            raise GenerationError(f"top_k must be an integer >= 1 (or None), got {self.top_k!r}")
        if p is not None and (not isinstance(p, int | float) or not 0.0 < p <= 1.0):
            raise GenerationError(f"top_p must be in (0, 1] (or None), got {p!r}")
        if not isinstance(r, int | float) or not math.isfinite(r) or r <= 0:
            raise GenerationError(f"repetition_penalty must be a finite number > 0, got {r!r}")

    @property
    def greedy(self) -> bool:
        """True when the argmax is taken."""
        return self.temperature == 0


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float
                             ) -> np.ndarray:
    """``logits`` (N, V) with the tokens where ``seen`` (N, V bool) is True penalised."""
    if penalty == 1.0:
        return logits
    scaled = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, scaled, logits)


def filter_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """``logits`` with all but the k largest of each row set to -inf (ties at the k-th kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits)


def filter_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """``logits`` keeping, per row, the most likely tokens until their probability reaches p
    (the most likely token always stays)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranked = np.take_along_axis(logits, order, axis=-1)
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(-1, keepdims=True)
    before = np.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
    drop_ranked = before >= p
    drop_ranked[:, 0] = False
    drop = np.empty_like(drop_ranked)
    np.put_along_axis(drop, order, drop_ranked, axis=-1)
    return np.where(drop, -np.inf, logits)


def choose(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator,
           seen: np.ndarray | None = None) -> np.ndarray:
    """The next token of each row: (N,) int64 from ``logits`` (N, V)."""
    x = np.asarray(logits, np.float64)
    if x.ndim != 2:
        raise GenerationError(f"choose expects logits (N, vocab), got shape {x.shape}")
    if seen is not None:
        x = apply_repetition_penalty(x, seen, config.repetition_penalty)
    if config.greedy:
        return np.argmax(x, axis=-1).astype(np.int64)
    x = x / config.temperature
    if config.top_k is not None:
        x = filter_top_k(x, config.top_k)
    if config.top_p is not None:
        x = filter_top_p(x, config.top_p)
    x = x - x.max(-1, keepdims=True)
    probs = np.exp(x)
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(x.shape[0]) * cdf[:, -1]
    idx = (cdf <= u[:, None]).sum(-1)  # first index whose cdf exceeds u
    return np.minimum(idx, x.shape[-1] - 1).astype(np.int64)


def seen_tokens(rows: Sequence[Sequence[int]], vocab: int) -> np.ndarray:
    """(N, V) bool: which tokens occur in each row (for the repetition penalty)."""
    seen = np.zeros((len(rows), vocab), bool)
    for i, r in enumerate(rows):
        seen[i, np.asarray(r, np.int64)] = True
    return seen
