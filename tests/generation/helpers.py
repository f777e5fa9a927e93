"""Tiny causal models for the generation tests, and a runner that records the logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.generation import GenerationGraphs, trace_generation
from lbdl_graph.frontends.layers import Embedding, Linear, ModuleList
from lbdl_graph.frontends.layers import SinusoidalPositionalEncoding as Sinusoidal
from lbdl_graph.frontends.module import Module
from lbdl_graph.frontends.tensor import Tensor
from lbdl_graph.frontends.zoo import GPT, GPTConfig
from lbdl_graph.frontends.zoo.transformer import TransformerBlock

VOCAB, CONTEXT = 40, 24


def tiny_gpt(seed: int = 0, *, tie: bool = True) -> GPT:
    """A 2-layer GPT (d=16, 2 heads) with weights large enough that logits differ."""
    manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, context=CONTEXT, num_layers=2, d_model=16,
                         num_heads=2, dropout=0.0, tie_weights=tie, init_std=0.3))


class SinusoidalLM(Module):
    """Not a GPT: sinusoidal positions, post-LN blocks, untied head (genericity check)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = Embedding(VOCAB, 16)
        self.pos = Sinusoidal(16)
        self.blocks = ModuleList(TransformerBlock(16, 4, 32, norm_first=False, causal=True)
                                 for _ in range(2))
        self.out = Linear(16, VOCAB)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.pos(self.emb(idx))
        for b in self.blocks:
            x = b(x)
        return self.out(x)


_GRAPHS: dict[Any, GenerationGraphs] = {}


def tiny_graphs(seed: int = 0) -> GenerationGraphs:
    """Prefill/decode graphs of :func:`tiny_gpt` (cached across tests)."""
    if seed not in _GRAPHS:
        _GRAPHS[seed] = trace_generation(tiny_gpt(seed))
    return _GRAPHS[seed]


class Recording:
    """Wraps a step runner and keeps every logits array it returns."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.vocab_size, self.context = inner.vocab_size, inner.context
        self.logits: list[np.ndarray] = []

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.logits.append(self.inner.start(ids, mask))
        return self.logits[-1]

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.logits.append(self.inner.step(ids, mask))
        return self.logits[-1]

    def cache_bytes(self) -> int:
        return int(self.inner.cache_bytes())
