"""A trace-time key/value cache: the one hook that turns any causal model into the prefill and
decode graphs of autoregressive generation.

While a :class:`KVCache` is active (``with cache.active(): model(ids)``), every causal
self-attention :class:`~lbdl_graph.frontends.layers.MultiheadAttention` concatenates its past
keys and values (if any) with the new ones on the sequence axis, records the result as its
*present*, and masks with :meth:`KVCache.keep_mask` instead of the plain causal mask; learned and
sinusoidal positional encodings number the new tokens with :meth:`KVCache.positions`. No model
code changes: GPT, or any other model built from these layers, gets a cache for free.

With ``shared=True`` (the fast decode graph) the past entries are buffers (N, H, M, Dh) of a
fixed capacity M instead: each attention layer calls :meth:`KVCache.attend`, one
``cache_attention`` op that writes the new keys and values into the buffer and attends over its
filled part (ONNX Runtime's GroupQueryAttention, in place), so no step copies the cache. That
path takes unpadded rows only: each row's length is its number of real tokens.

Positions and masks come from an ``attention_mask`` (N, P+T) of ones (real tokens) and zeros
(padding), as in Hugging Face: a token's position is the number of real tokens before it, and a
query may attend to the real keys whose position is not after its own. With left padding every
row of a batch then computes exactly what it computes alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lbdl_graph import ops
from lbdl_graph.errors import GraphError, ShapeError

from .. import functional as F
from ..context import current_state
from ..tensor import Tensor, error

__all__ = ["CacheLayer", "KVCache", "active_cache"]


@dataclass(frozen=True)
class CacheLayer:
    """What one cached attention layer stores: module path, heads and head size."""

    path: str
    num_heads: int
    head_dim: int


@dataclass
class KVCache:
    """The cache of one trace.

    Args:
        attention_mask: int64 or bool (N, P+T), nonzero at real tokens.
        past: the past (key, value) of each cached layer in call order, each (N, H, P, Dh);
            None in a prefill (P = 0).
        shared: the past entries are buffers (N, H, M, Dh) that :meth:`attend` writes into.
    """

    attention_mask: Tensor
    past: Sequence[tuple[Tensor, Tensor]] | None = None
    shared: bool = False
    layers: list[CacheLayer] = field(default_factory=list)
    present: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    _positions: Tensor | None = None
    _keep: dict[int, Tensor] = field(default_factory=dict)
    _lengths: tuple[Tensor, Tensor] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[KVCache]:
        """Make this the cache the layers of the current trace use."""
        st = current_state()
        saved = st.kv_cache
        st.kv_cache = self
        try:
            yield self
        finally:
            st.kv_cache = saved

    # ---- positions and masks ----
    def _all_positions(self) -> Tensor:
        """(N, P+T) int64: the number of real tokens before each one (0 at padding)."""
        if self._positions is None:
            m = self.attention_mask
            if m.ndim != 2:
                raise error(ShapeError, f"KVCache: attention_mask must be (N, P+T), got {m.type}")
            ones = m.to("int64") if not m.dtype.is_bool else m.long()
            self._positions = (ones.cumsum(1) - 1).clamp(min=0)
        return self._positions

    def _last(self, t: Tensor, length: int | str) -> Tensor:
        if self.past is None:
            return t
        if not isinstance(length, int):
            raise error(ShapeError, f"KVCache: with a past, the new tokens' length must be "
                        f"static, got {length}")
        return t[:, -length:]

    def positions(self, length: int | str) -> Tensor:
        """(N, T) int64 positions of the ``length`` new tokens."""
        return self._last(self._all_positions(), length)

    def keep_mask(self, length: int | str) -> Tensor:
        """(N, 1, T, P+T) bool: True where a new query may attend to a key."""
        key = 0 if not isinstance(length, int) else length
        hit = self._keep.get(key)
        if hit is None:
            pos = self._all_positions()
            q = self._last(pos, length)
            real = (self.attention_mask != 0) if not self.attention_mask.dtype.is_bool \
                else self.attention_mask
            hit = (pos.unsqueeze(1).unsqueeze(2) <= q.unsqueeze(1).unsqueeze(3)) \
                & real.unsqueeze(1).unsqueeze(2)
            self._keep[key] = hit
        return hit

    # ---- the attention hook ----
    def extend(self, path: str, num_heads: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (N, H, P+T, Dh) of layer ``path``: its past then the new ones
        ``k``, ``v`` (N, H, T, Dh); records them as the layer's present."""
        i = len(self.present)
        head_dim = k.shape[-1]
        if not isinstance(head_dim, int):
            raise error(ShapeError, f"KVCache: head size of layer {path} is symbolic")
        if self.past is not None:
            if i >= len(self.past):
                raise GraphError(f"KVCache: attention layer {path} is cached layer {i + 1}, but "
                                 f"only {len(self.past)} past entries were given")
            pk, pv = self.past[i]
            k, v = F.cat([pk, k], 2), F.cat([pv, v], 2)
        self.layers.append(CacheLayer(path, num_heads, head_dim))
        self.present.append((k, v))
        return k, v

    def _seqlens(self) -> tuple[Tensor, Tensor]:
        """(N,) int32 total length minus one of each row, and the int32 scalar max length."""
        if self._lengths is None:
            m = self.attention_mask
            real = (m != 0) if not m.dtype.is_bool else m
            seqlens = (real.to("int32").sum(1) - 1).to("int32")
            self._lengths = seqlens, (seqlens.max() + 1).to("int32")
        return self._lengths

    def attend(self, path: str, num_heads: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Shared cache: attention (N, T, E) of the new tokens' projections ``q``, ``k``, ``v``
        (N, T, E) over layer ``path``'s buffer, which gets the new keys and values; records the
        written buffers as the layer's present."""
        i = len(self.present)
        if not self.shared or self.past is None or i >= len(self.past):
            raise GraphError(f"KVCache.attend: attention layer {path} needs a shared cache with "
                             f"a buffer for cached layer {i + 1}")
        e = q.shape[-1]
        if not isinstance(e, int):
            raise error(ShapeError, f"KVCache: embedding size of layer {path} is symbolic")
        seqlens, total = self._seqlens()
        pk, pv = self.past[i]
        out, present_k, present_v = ops.cache_attention(
            q.value, k.value, v.value, pk.value, pv.value, seqlens.value, total.value,
            num_heads=num_heads)
        self.layers.append(CacheLayer(path, num_heads, e // num_heads))
        self.present.append((Tensor(present_k), Tensor(present_v)))
        return Tensor(out)


def active_cache() -> KVCache | None:
    """The cache of the current trace, if one is active."""
    try:
        st = current_state()
    except GraphError:
        return None
    return st.kv_cache if isinstance(st.kv_cache, KVCache) else None
