"""ONNX lowering of ``cache_attention``: ONNX Runtime's ``com.microsoft`` GroupQueryAttention.

GroupQueryAttention takes the new tokens' projections (N, T, H*Dh), the cache buffers
(N, H, M, Dh), ``seqlens_k`` (each row's total length minus one) and ``total_sequence_length``,
with rotary embedding off and ``kv_num_heads = num_heads``. Bound to the same memory as the
past buffers (IOBinding), the presents are written in place: no copy of the cache per step.
There is no standard-ops form (target "portable" refuses the op); the standard decode graph,
which concatenates past and new keys/values, is the portable one.
"""

from __future__ import annotations

import math

from lbdl_graph import ops
from lbdl_graph.errors import OnnxError

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []

_GQA_TYPES = ("float32", "float16", "bfloat16")


@LOWERINGS.register(ops.cache_attention)
def _cache_attention_onnx(b: OnnxBuilder, q: str, k: str, v: str, past_key: str,
                          past_value: str, seqlens: str, total: str, *, num_heads: int,
                          scale: float | None) -> tuple[str, ...]:
    pt = b.in_type(3)
    if b.target != "ort":
        raise OnnxError("cache_attention (the shared KV cache) lowers only to ONNX Runtime's "
                        "GroupQueryAttention; export the standard decode graph for target "
                        f"{b.target!r}")
    if pt.dtype.name not in _GQA_TYPES:
        raise OnnxError(f"cache_attention: ONNX Runtime's GroupQueryAttention has no "
                        f"{pt.dtype.name} kernel")
    dh = pt.shape[3]
    if not isinstance(dh, int) or dh % 8:
        raise OnnxError(f"cache_attention: GroupQueryAttention on CPU needs a head size that is "
                        f"a multiple of 8, got {dh}")
    s = 1.0 / math.sqrt(dh) if scale is None else float(scale)
    return b.op_n("GroupQueryAttention", 3, q, k, v, past_key, past_value, seqlens, total,
                  domain="com.microsoft", num_heads=num_heads, kv_num_heads=num_heads,
                  scale=s, do_rotary=0)
