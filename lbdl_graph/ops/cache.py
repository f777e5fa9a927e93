"""``cache_attention``: causal self-attention that writes its new keys and values into a
preallocated cache buffer (the shared, in-place KV cache of fast decoding).

``cache_attention(q, k, v, past_key, past_value, seqlens, total) -> (out, present_key,
present_value)``: q, k, v are (N, T, H*Dh) projections of T new tokens; past_key/past_value
are (N, H, M, Dh) buffers of capacity M whose first ``seqlens[n] + 1 - T`` positions hold row n's
past; ``seqlens`` (N,) int32 is each row's total length minus one (ONNX Runtime's convention) and
``total`` the int32 scalar max of the total lengths. The presents are the buffers with the new
keys/values written at positions ``seqlens + 1 - T ...  seqlens``; new token i attends to the
buffer positions up to its own. It lowers to ONNX Runtime's ``com.microsoft`` GroupQueryAttention,
which writes in place when past and present are bound to the same memory. Not differentiable:
it is an inference op.
"""

from __future__ import annotations

from ..errors import DTypeError, ShapeError
from ..opdef import Attr, defop
from ..types import TensorType
from ._rules import require, same_dtype

__all__ = ["cache_attention"]


def _cache_attention_rule(q: TensorType, k: TensorType, v: TensorType, past_key: TensorType,
                          past_value: TensorType, seqlens: TensorType, total: TensorType, *,
                          num_heads: int, scale: float | None
                          ) -> tuple[TensorType, TensorType, TensorType]:
    same_dtype(q, k, v, past_key, past_value)
    require(q, "query", kinds=("float",))
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 3:
            raise ShapeError(f"cache_attention: {name} {t} must be (N, T, H*Dh)")
    for name, t in (("past_key", past_key), ("past_value", past_value)):
        if t.ndim != 4 or t.shape[1] != num_heads:
            raise ShapeError(f"cache_attention: {name} {t} must be (N, {num_heads}, M, Dh)")
        e = t.shape[3]
        if isinstance(e, int) and isinstance(q.shape[2], int) and e * num_heads != q.shape[2]:
            raise ShapeError(f"cache_attention: {name} {t} has head size {e}, but q {q} has "
                             f"{q.shape[2]} = {num_heads} heads x head size")
    if seqlens.ndim != 1 or seqlens.dtype.name != "int32":
        raise DTypeError(f"cache_attention: seqlens {seqlens} must be int32 (N,)")
    if total.ndim != 0 or total.dtype.name != "int32":
        raise DTypeError(f"cache_attention: total {total} must be an int32 scalar")
    return q, past_key, past_value


cache_attention = defop(
    "cache_attention", ("q", "k", "v", "past_key", "past_value", "seqlens", "total"),
    infer=_cache_attention_rule,
    attrs=(Attr("num_heads", "int"), Attr("scale", "float", None, True)), outputs=3,
    doc="causal attention of T new tokens over a KV cache buffer (N, H, M, Dh) that the new "
        "keys/values are written into at positions seqlens+1-T .. seqlens; scale=None means "
        "1/sqrt(Dh); ONNX Runtime GroupQueryAttention")
