"""Attention (book section 4.8): scaled dot-product attention with masks and dropout.

Masked scores are set to the dtype's lowest finite value rather than -inf, so a fully masked
row gives uniform weights instead of NaN; partially masked rows match PyTorch exactly. The causal
mask is built from ``iota_like`` on the scores, so it works with a symbolic sequence length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import DTypeError, ShapeError

from ..tensor import Tensor, as_tensor, error
from ._util import const, float_tensor
from .dropout import dropout

__all__ = ["attention", "causal_mask", "scaled_dot_product_attention"]


def causal_mask(scores: Tensor) -> Tensor:
    """Bool mask of scores' shape, True where key index <= query index (may attend)."""
    r = scores.ndim
    rows = Tensor(ops.iota_like(scores.value, axis=r - 2))
    cols = Tensor(ops.iota_like(scores.value, axis=r - 1))
    return cols <= rows


def attention(q: Any, k: Any, v: Any, *, keep: Tensor | None = None, bias: Tensor | None = None,
              is_causal: bool = False, dropout_p: float = 0.0, scale: float | None = None
              ) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale + bias, masked where not keep) v``; returns (output, weights).

    q is (..., L, E), k (..., S, E), v (..., S, Ev); ``keep`` is a bool mask (True = attend)
    and ``bias`` a float mask added to the scores, both broadcast to (..., L, S).
    """
    qt, kt, vt = (float_tensor(a, "attention") for a in (q, k, v))
    if qt.ndim < 2 or kt.ndim < 2 or vt.ndim < 2:
        raise error(ShapeError, f"attention needs (..., L, E) operands, got {qt.type}, "
                    f"{kt.type}, {vt.type}")
    if scale is None:
        e = qt.shape[-1]
        if not isinstance(e, int):
            raise error(ShapeError, f"attention: head dim of {qt.type} is symbolic; pass scale=")
        scale = 1.0 / math.sqrt(e)
    scores = (qt @ kt.mT) * const(scale, qt)
    if bias is not None:
        scores = scores + bias
    if is_causal:
        c = causal_mask(scores)
        keep = c if keep is None else keep & c
    if keep is not None:
        low = const(np.finfo(qt.dtype.numpy).min, qt)
        scores = Tensor(ops.where(keep.value, scores.value, low.value))
    weights = scores.softmax(-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return weights @ vt, weights


def _mask(attn_mask: Any, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Split a PyTorch attn_mask into (keep, bias): bool masks keep, float masks add."""
    if attn_mask is None:
        return None, None
    m = attn_mask if isinstance(attn_mask, Tensor) else as_tensor(np.asarray(attn_mask))
    if m.dtype.is_bool:
        return m, None
    if not m.dtype.is_float:
        raise error(DTypeError, f"attn_mask must be bool or float, got {m.type}")
    return None, m.to(like.dtype)


def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """PyTorch's ``F.scaled_dot_product_attention``: a bool ``attn_mask`` marks the positions
    that may be attended (True), a float one is added to the scores; ``is_causal`` masks the
    future (built from the scores' shape, so the sequence length may be symbolic); dropout on
    the attention weights uses the trace's random key."""
    q = float_tensor(query, "scaled_dot_product_attention")
    keep, bias = _mask(attn_mask, q)
    out, _ = attention(q, key, value, keep=keep, bias=bias, is_causal=is_causal,
                       dropout_p=dropout_p, scale=scale)
    return out
