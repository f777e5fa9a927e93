"""Dropout (book section 4.5) on the counter-based random ops.

Each call draws from the trace's ``rng_key`` input with a fresh salt, so every dropout layer of
one step gets an independent mask and the training loop advances the key between steps.
"""

from __future__ import annotations

from typing import Any

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from ..context import current_state
from ..tensor import Tensor, error
from ._util import const, float_tensor

__all__ = ["dropout", "dropout1d", "dropout2d"]


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise error(ShapeError, f"dropout probability must be in [0, 1], got {p}")
    return float(p)


def dropout(x: Any, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each entry with probability ``p`` and scale the rest by ``1/(1-p)``; identity when
    not training."""
    t = float_tensor(x, "dropout")
    p = _check_p(p)
    if not training or p == 0.0:
        return t
    if p == 1.0:
        return t * const(0.0, t)
    st = current_state()
    return Tensor(ops.dropout(t.value, st.rng_key(), ratio=p, salt=st.next_salt()))


def _channel_dropout(x: Any, p: float, training: bool, rank: int, what: str) -> Tensor:
    t = float_tensor(x, what)
    p = _check_p(p)
    if t.ndim != rank:
        raise error(ShapeError, f"{what} expects a rank-{rank} (N, C, ...) input, got {t.type}")
    if not training or p == 0.0:
        return t
    if p == 1.0:
        return t * const(0.0, t)
    # one draw per (sample, channel): the mask is drawn on an (N, C, 1, ...) tensor, then
    # broadcast over the spatial dims
    like = t[(slice(None), slice(None)) + (slice(0, 1),) * (rank - 2)]
    st = current_state()
    u = Tensor(ops.random_uniform(like.value, st.rng_key(), salt=st.next_salt(), dtype=t.dtype))
    keep = (u >= p).to(t.dtype)
    return t * (keep * const(1.0 / (1.0 - p), t))


def dropout1d(x: Any, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero whole channels of an (N, C, L) tensor with probability ``p``."""
    return _channel_dropout(x, p, training, 3, "dropout1d")


def dropout2d(x: Any, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero whole channels of an (N, C, H, W) tensor with probability ``p`` (book fig. 4.8)."""
    return _channel_dropout(x, p, training, 4, "dropout2d")
