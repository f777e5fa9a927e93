"""The prefill and decode graphs of a causal language model, traced from its own ``forward``.

``prefill``: ``input_ids`` (N, T) and ``attention_mask`` (N, T) -> ``logits`` (N, T, V) and the
``present.{i}.key`` / ``present.{i}.value`` (N, H, T, Dh) of every cached attention layer.
``decode``: one new token ``input_ids`` (N, 1), ``attention_mask`` (N, P+1) and the
``past_key_values.{i}.key`` / ``.value`` (N, H, P, Dh) of symbolic length P -> ``logits``
(N, 1, V) and the presents (N, H, P+1, Dh). Names follow Hugging Face's ONNX exports.
With ``shared_cache=True`` the decode graph's pasts are instead buffers (N, H, M, Dh) of a fixed
capacity M that its ``cache_attention`` ops write the new position into (ONNX Runtime's
GroupQueryAttention, in place when past and present share memory); the presents are the same
buffers. It is an opt-in fast path for ONNX Runtime on CPU, fp32 or weight-only quantised, for
unpadded batches; the Concat graph stays the default and the portable one.

Nothing here is model specific: a :class:`~lbdl_graph.frontends.layers.kv_cache.KVCache` is
active while ``model(input_ids)`` is traced, and the attention layers do the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbdl_graph.errors import GraphError, ShapeError
from lbdl_graph.graph import Graph
from lbdl_graph.shapes import add_dims

from ..layers.kv_cache import CacheLayer, KVCache
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec, trace

__all__ = ["GenerationGraphs", "key_name", "past_name", "present_name", "trace_generation",
           "trace_recompute"]

IDS, MASK, LOGITS = "input_ids", "attention_mask", "logits"


def past_name(i: int, kind: str) -> str:
    """``past_key_values.{i}.key`` or ``.value``: a decode graph input."""
    return f"past_key_values.{i}.{kind}"


def present_name(i: int, kind: str) -> str:
    """``present.{i}.key`` or ``.value``: a graph output."""
    return f"present.{i}.{kind}"


def key_name(name: str) -> str:
    """The past input a present output feeds on the next step."""
    return "past_key_values." + name[len("present."):]


@dataclass(frozen=True)
class GenerationGraphs:
    """The pair of graphs and what a runner needs to know about them."""

    prefill: Graph
    decode: Graph
    layers: tuple[CacheLayer, ...]
    vocab_size: int
    context: int | None
    shared: bool = False

    def config(self) -> dict[str, Any]:
        """The JSON-able description written next to an export (``generation_config.json``)."""
        return {
            "format": "lbdl-graph generation",
            "version": 1,
            "vocab_size": self.vocab_size,
            "context": self.context,
            "layers": [{"path": c.path, "num_heads": c.num_heads, "head_dim": c.head_dim}
                       for c in self.layers],
            "inputs": {"ids": IDS, "mask": MASK, "past": past_name(0, "key")},
            "outputs": {"logits": LOGITS, "present": present_name(0, "key")},
            "cache": "shared" if self.shared else "concat",
        }


def _logits(out: Any, what: str) -> Tensor:
    if isinstance(out, tuple | list) and out:
        out = out[0]
    if not isinstance(out, Tensor) or out.ndim != 3:
        raise GraphError(f"{what}: the model must return logits (N, T, vocab), got "
                         f"{getattr(out, 'type', type(out).__name__)}")
    return out


def _step(model: Module, cache_out: list[KVCache], what: str, shared: bool = False
          ) -> Callable[..., dict[str, Tensor]]:
    """A traceable function: the model's forward inside a KV cache."""

    def fn(input_ids: Tensor, attention_mask: Tensor, **past: Tensor) -> dict[str, Tensor]:
        pairs = None
        if past:
            n = len(past) // 2
            pairs = [(past[f"k{i}"], past[f"v{i}"]) for i in range(n)]
        cache = KVCache(attention_mask, pairs, shared=shared)
        with cache.active():
            logits = _logits(model(input_ids), what)
        if pairs is not None and len(cache.present) != len(pairs):
            raise GraphError(f"{what}: {len(pairs)} past entries but {len(cache.present)} "
                             "attention layers used them")
        cache_out.append(cache)
        out = {LOGITS: logits}
        for i, (k, v) in enumerate(cache.present):
            out[present_name(i, "key")] = k
            out[present_name(i, "value")] = v
        return out

    return fn


def _context(model: Module, context: int | None) -> int | None:
    if context is not None:
        return int(context)
    c = getattr(getattr(model, "config", None), "context", None)
    return int(c) if isinstance(c, int) else None


def trace_generation(model: Module, *, context: int | None = None, name: str | None = None,
                     shared_cache: bool = False) -> GenerationGraphs:
    """Trace ``model`` (``forward(ids) -> logits``, causal self-attention from
    :class:`MultiheadAttention`) into its prefill and decode graphs, in evaluation mode.

    ``context`` is the longest sequence the model takes (default ``model.config.context``);
    ``shared_cache`` traces the decode graph over cache buffers written in place."""
    base = name or type(model).__name__
    caches: list[KVCache] = []
    prefill = trace(_step(model, caches, "prefill"),
                    {"input_ids": InputSpec(("N", "T"), "int64", IDS),
                     "attention_mask": InputSpec(("N", "T"), "int64", MASK)},
                    name=f"{base}_prefill", training=False, module=model)
    layers = tuple(caches[-1].layers)
    if not layers:
        raise GraphError(f"{base}: no causal self-attention layer used the KV cache; "
                         "generation graphs need MultiheadAttention(..., is_causal=True)")
    vocab = _vocab(prefill)
    total = add_dims(["P", 1])
    specs: dict[str, Any] = {"input_ids": InputSpec(("N", 1), "int64", IDS),
                             "attention_mask": InputSpec(("N", total), "int64", MASK)}
    dt = _cache_dtype(prefill)
    for i, c in enumerate(layers):
        shape = ("N", c.num_heads, "M" if shared_cache else "P", c.head_dim)
        specs[f"k{i}"] = InputSpec(shape, dt, past_name(i, "key"))
        specs[f"v{i}"] = InputSpec(shape, dt, past_name(i, "value"))
    decode = trace(_step(model, caches, "decode", shared_cache), specs, name=f"{base}_decode",
                   training=False, module=model)
    return GenerationGraphs(prefill, decode, layers, vocab, _context(model, context),
                            shared_cache)


def _vocab(g: Graph) -> int:
    v = next(o for o in g.outputs if o.name == LOGITS)
    size = v.type.shape[-1]
    if not isinstance(size, int):
        raise ShapeError(f"{g.name}: the vocabulary size of logits {v.type} is symbolic")
    return size


def _cache_dtype(g: Graph) -> str:
    v = next(o for o in g.outputs if o.name == present_name(0, "key"))
    return v.type.dtype.name


def trace_recompute(model: Module, *, name: str | None = None) -> Graph:
    """The plain graph ``input_ids`` (N, T) -> ``logits`` (N, T, V): no cache, every step
    recomputes the whole sequence (the baseline a KV cache is checked and timed against)."""

    def fn(input_ids: Tensor) -> dict[str, Tensor]:
        return {LOGITS: _logits(model(input_ids), "recompute")}

    return trace(fn, {"input_ids": InputSpec(("N", "T"), "int64", IDS)},
                 name=name or f"{type(model).__name__}_recompute", training=False,
                 module=model)
