"""Additive (Bahdanau) attention: ``score(s, h_j) = v · tanh(W_q s + W_k h_j)``.

Bahdanau, Cho and Bengio (2015), "Neural machine translation by jointly learning to align and
translate": a decoder state ``s`` (N, query_dim) attends over encoder states ``keys``
(N, L, key_dim); the weights are ``softmax_j score(s, h_j)`` (positions where a bool ``mask`` is
False get none) and the context is their weighted sum of ``values`` (default: the keys).
Parameters: ``query_proj.weight`` (A, query_dim), ``key_proj.weight``/``key_proj.bias``
(A, key_dim)/(A), ``v.weight`` (1, A).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph.errors import DTypeError, ShapeError

from ..module import Module
from ..tensor import Tensor, as_tensor, error
from ._util import check_int
from .linear import Linear

__all__ = ["AdditiveAttention"]


class AdditiveAttention(Module):
    """``forward(query, keys, values=None, mask=None, projected_keys=None)`` ->
    ``(context (N, value_dim), weights (N, L))``.

    ``projected_keys`` (from :meth:`project_keys`) lets a decoder project the encoder states
    once and reuse them at every step.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        name = "AdditiveAttention"
        self.query_dim = check_int(name, "query_dim", query_dim)
        self.key_dim = check_int(name, "key_dim", key_dim)
        self.attn_dim = check_int(name, "attn_dim", attn_dim)
        self.query_proj = Linear(query_dim, attn_dim, bias=False)
        self.key_proj = Linear(key_dim, attn_dim)
        self.v = Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k h_j + b`` for every position: (N, L, attn_dim)."""
        k = as_tensor(keys)
        if k.ndim != 3 or (isinstance(k.shape[2], int) and k.shape[2] != self.key_dim):
            raise error(ShapeError, f"AdditiveAttention: keys must be (N, L, {self.key_dim}), "
                        f"got {k.type}")
        return self.key_proj(k)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None,
                mask: Any = None, projected_keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The context vector and the attention weights of one query per batch row."""
        q = as_tensor(query)
        if q.ndim != 2 or (isinstance(q.shape[1], int) and q.shape[1] != self.query_dim):
            raise error(ShapeError, f"AdditiveAttention: query must be (N, {self.query_dim}), "
                        f"got {q.type}")
        k = as_tensor(keys)
        pk = self.project_keys(k) if projected_keys is None else as_tensor(projected_keys)
        hidden = (pk + self.query_proj(q).unsqueeze(1)).tanh()  # (N, L, A)
        scores = self.v(hidden).squeeze(-1)  # (N, L)
        if mask is not None:
            m = mask if isinstance(mask, Tensor) else as_tensor(np.asarray(mask))
            if not m.dtype.is_bool:
                raise error(DTypeError, f"AdditiveAttention: mask must be bool (True = attend),"
                            f" got {m.type}")
            scores = scores.masked_fill(m.logical_not(), float("-inf"))
        weights = scores.softmax(-1)
        v = k if values is None else as_tensor(values)
        context = (weights.unsqueeze(1) @ v).squeeze(1)  # (N, 1, L) @ (N, L, D) -> (N, D)
        return context, weights

    def extra_repr(self) -> str:
        return f"{self.query_dim}, {self.key_dim}, attn_dim={self.attn_dim}"
