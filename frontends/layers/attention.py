"""Multi-head attention (book section 4.8), with PyTorch's parameters and mask conventions.

Parameters: ``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E) holding the query, key and
value projections stacked (or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when kdim or
vdim differ from E), and ``out_proj.weight``/``out_proj.bias``. Masks follow
``torch.nn.MultiheadAttention``: in a bool ``attn_mask`` or ``key_padding_mask`` True means
*not allowed*; float masks are added to the scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph.errors import DTypeError, ShapeError

from .. import functional as F
from .. import init
from ..context import current_state
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, as_tensor, error
from ._util import check_int, check_prob, layer_error
from .kv_cache import active_cache
from .linear import Linear

__all__ = ["MultiheadAttention"]


def _mask_tensor(m: Any, like: Tensor, what: str) -> Tensor:
    t = m if isinstance(m, Tensor) else as_tensor(np.asarray(m))
    if t.dtype.is_bool:
        return t
    if not t.dtype.is_float:
        raise error(DTypeError, f"{what} must be bool or float, got {t.type}")
    return t.to(like.dtype)


class MultiheadAttention(Module):
    """Self- or cross-attention with ``num_heads`` heads of size ``embed_dim // num_heads``.

    ``forward(query, key, value)`` takes (L, N, E) tensors, or (N, L, E) with ``batch_first``,
    and returns ``(output, weights)``; weights are averaged over heads unless
    ``average_attn_weights=False``, and None with ``need_weights=False``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None,
                 batch_first: bool = False) -> None:
        super().__init__()
        name = "MultiheadAttention"
        self.embed_dim = check_int(name, "embed_dim", embed_dim)
        self.num_heads = check_int(name, "num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise layer_error(name, f"num_heads={num_heads} does not divide embed_dim="
                              f"{embed_dim}")
        self.head_dim = self.embed_dim // self.num_heads
        self.kdim = self.embed_dim if kdim is None else check_int(name, "kdim", kdim)
        self.vdim = self.embed_dim if vdim is None else check_int(name, "vdim", vdim)
        self.dropout = check_prob(name, "dropout", dropout)
        self.batch_first = bool(batch_first)
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(init.empty(3 * e, e))
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(n, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = Parameter(init.empty(e, e))
            self.k_proj_weight = Parameter(init.empty(e, self.kdim))
            self.v_proj_weight = Parameter(init.empty(e, self.vdim))
        if bias:
            self.in_proj_bias = Parameter(init.empty(3 * e))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's scheme: xavier_uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        e, b = self.embed_dim, self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        if self._qkv_same_embed_dim:
            if k is q and v is q:  # self-attention: one matmul for the three projections
                qp, kp, vp = F.linear(q, self.in_proj_weight, b).split(e, -1)
                return qp, kp, vp
            w = self.in_proj_weight
            wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(q, wq, bq), F.linear(k, wk, bk), F.linear(v, wv, bv)

    def _heads(self, x: Tensor) -> Tensor:
        n, length = x.shape[0], x.shape[1]
        return x.reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _masks(self, attn_mask: Any, key_padding_mask: Any, q: Tensor
               ) -> tuple[Tensor | None, Tensor | None]:
        keep: Tensor | None = None
        bias: Tensor | None = None
        if attn_mask is not None:
            m = _mask_tensor(attn_mask, q, "attn_mask")
            if m.ndim == 3:  # (N*H, L, S) -> (N, H, L, S)
                m = m.reshape(-1, self.num_heads, m.shape[1], m.shape[2])
            elif m.ndim != 2:
                raise error(ShapeError, f"attn_mask must be (L, S) or (N*num_heads, L, S), got "
                            f"{m.type}")
            keep, bias = (~m, None) if m.dtype.is_bool else (None, m)
        if key_padding_mask is not None:
            kp = _mask_tensor(key_padding_mask, q, "key_padding_mask")
            if kp.ndim != 2:
                raise error(ShapeError, f"key_padding_mask must be (N, S), got {kp.type}")
            kp = kp.unsqueeze(1).unsqueeze(2)
            if kp.dtype.is_bool:
                keep = ~kp if keep is None else keep & ~kp
            else:
                bias = kp if bias is None else bias + kp
        return keep, bias

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                key_padding_mask: Any = None, need_weights: bool = True, attn_mask: Any = None,
                average_attn_weights: bool = True, is_causal: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value`` (default: the query itself);
        ``is_causal`` masks future keys (built from iota, so the length may be symbolic).

        Causal self-attention inside an active :class:`~.kv_cache.KVCache` attends to the
        cache's past keys and values too and records its present ones (generation)."""
        q = as_tensor(query)
        k = q if key is None else as_tensor(key)
        v = k if value is None else as_tensor(value)
        for t, d, what in ((q, self.embed_dim, "query"), (k, self.kdim, "key"),
                           (v, self.vdim, "value")):
            if t.ndim != 3 or (isinstance(t.shape[-1], int) and t.shape[-1] != d):
                layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
                raise error(ShapeError, f"MultiheadAttention: {what} must be {layout} with E={d}, "
                            f"got {t.type}")
        same_kv, same_qk = v is k, k is q
        if not self.batch_first:
            q = q.transpose(0, 1)
            k = q if same_qk else k.transpose(0, 1)
            v = k if same_kv else v.transpose(0, 1)
        qp, kp, vp = self._project(q, k, v)
        cache = active_cache() if is_causal and same_qk and same_kv else None
        if cache is not None and cache.shared:  # fast decoding: one op on the cache buffer
            return self._shared_cache(cache, qp, kp, vp, attn_mask, key_padding_mask)
        qh, kh, vh = self._heads(qp), self._heads(kp), self._heads(vp)
        keep: Tensor | None
        bias: Tensor | None
        if cache is not None:  # generation: past keys/values first, positions from the cache
            if attn_mask is not None or key_padding_mask is not None:
                raise error(ShapeError, "MultiheadAttention: with a KV cache, padding goes "
                            "through the cache's attention_mask, not attn_mask/key_padding_mask")
            path = current_state().module_paths.get(id(self), type(self).__name__)
            kh, vh = cache.extend(path, self.num_heads, kh, vh)
            keep, bias, is_causal = cache.keep_mask(qh.shape[2]), None, False
        else:
            keep, bias = self._masks(attn_mask, key_padding_mask, q)
        out, weights = F.attention(qh, kh, vh, keep=keep, bias=bias, is_causal=is_causal,
                                   dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2)
        out = self.out_proj(out.reshape(out.shape[0], out.shape[1], self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights

    def _shared_cache(self, cache: Any, qp: Tensor, kp: Tensor, vp: Tensor, attn_mask: Any,
                      key_padding_mask: Any) -> tuple[Tensor, Tensor | None]:
        """Attention through the cache's ``cache_attention`` op (no attention weights)."""
        if attn_mask is not None or key_padding_mask is not None:
            raise error(ShapeError, "MultiheadAttention: with a KV cache, padding goes "
                        "through the cache's attention_mask, not attn_mask/key_padding_mask")
        path = current_state().module_paths.get(id(self), type(self).__name__)
        out = self.out_proj(cache.attend(path, self.num_heads, qp, kp, vp))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}")
