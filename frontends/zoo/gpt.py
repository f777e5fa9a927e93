"""GPT: a causal Transformer decoder (book section 5.3, figure 5.8; Radford et al. 2018, 2019).

Token embedding + learned positional embedding, pre-LayerNorm blocks of causal self-attention
and a GELU MLP (``layers.{i}.ln1/attn/ln2/mlp``), a final LayerNorm ``ln_f`` and the ``head``
to vocabulary logits, optionally tied to the token embedding. Weights are initialised as GPT-2:
N(0, 0.02) (output projections of each residual branch scaled by 1/sqrt(2 * layers)), zero
biases. ``gpt2_small`` (12 layers, d=768, 12 heads, vocabulary 50257, context 1024, tied) has
exactly 124,439,808 parameters. The sequence length ``T`` is symbolic (at most ``context``).
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import init
from ..layers import Dropout, Embedding, LayerNorm, LearnedPositionalEncoding, Linear, ModuleList
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry
from .transformer import TransformerBlock

__lbdl_user_code__ = True

__all__ = ["GPT", "ZOO_ENTRIES", "GPTConfig", "gpt_params"]


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters; ``d_ff`` defaults to 4 * d_model, ``head=False`` drops the vocabulary
    head (a text encoder, as in CLIP)."""

    vocab_size: int = 50257
    context: int = 1024
    num_layers: int = 12
    d_model: int = 768
    num_heads: int = 12
    d_ff: int | None = None
    dropout: float = 0.1
    activation: str = "gelu_tanh"
    tie_weights: bool = True
    head: bool = True
    init_std: float | None = 0.02
    eps: float = 1e-5

    @property
    def ff(self) -> int:
        """The MLP's hidden width."""
        return 4 * self.d_model if self.d_ff is None else self.d_ff


def gpt_params(c: GPTConfig) -> int:
    """The parameter count from the architecture formula (for checks and reports)."""
    d, f = c.d_model, c.ff
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    head = c.vocab_size * d if c.head and not c.tie_weights else 0
    return c.vocab_size * d + c.context * d + c.num_layers * block + 2 * d + head


class GPT(Module):
    """``forward(idx)``: int64 token ids (N, T) -> next-token logits (N, T, vocab_size)."""

    def __init__(self, config: GPTConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GPTConfig()
        if c.d_model % c.num_heads:
            raise OpError(f"GPTConfig: {c.num_heads} heads do not divide d_model={c.d_model}")
        # With GPT-2's scheme every weight is redrawn below, so the layers' defaults are skipped.
        with init.skip_random() if c.init_std is not None else nullcontext():
            self.tok_emb = Embedding(c.vocab_size, c.d_model)
            self.pos_emb = LearnedPositionalEncoding(c.context, c.d_model)
            self.drop = Dropout(c.dropout)
            self.layers = ModuleList(
                TransformerBlock(c.d_model, c.num_heads, c.ff, c.dropout, c.activation,
                                 norm_first=True, causal=True, eps=c.eps)
                for _ in range(c.num_layers))
            self.ln_f = LayerNorm(c.d_model, eps=c.eps)
            if c.head:
                self.head = Linear(c.d_model, c.vocab_size, bias=False)
                if c.tie_weights:
                    self.head.weight = self.tok_emb.weight
        if c.init_std is not None:
            self._init_weights(c.init_std)

    def _init_weights(self, std: float) -> None:
        """GPT-2's scheme: every weight N(0, std²), the position table N(0, std²/4), the
        projections into the residual stream scaled by 1/sqrt(2 * layers), biases zero."""
        init.normal_(self.tok_emb.weight, 0.0, std)
        init.normal_(self.pos_emb.weight, 0.0, std / 2)
        scaled = std / math.sqrt(2 * self.config.num_layers)
        for layer in self.layers:
            init.normal_(layer.attn.in_proj_weight, 0.0, std)
            init.normal_(layer.attn.out_proj.weight, 0.0, scaled)
            init.zeros_(layer.attn.out_proj.bias)
            init.normal_(layer.mlp.fc1.weight, 0.0, std)
            init.zeros_(layer.mlp.fc1.bias)
            init.normal_(layer.mlp.fc2.weight, 0.0, scaled)
            init.zeros_(layer.mlp.fc2.bias)
        if self.config.head and not self.config.tie_weights:
            init.normal_(self.head.weight, 0.0, std)

    @classmethod
    def from_hf(cls, path: str | os.PathLike[str], *, strict: bool = True) -> GPT:
        """A GPT with the weights of a transformers GPT-2 ``save_pretrained`` directory
        (``config.json`` + ``model.safetensors``); see :mod:`.checkpoints.gpt2`."""
        from .checkpoints.gpt2 import load_gpt2

        return load_gpt2(path, strict=strict)

    def forward_features(self, idx: Tensor) -> Tensor:
        """The final hidden states (N, T, d_model), after ``ln_f``."""
        x = self.drop(self.pos_emb(self.tok_emb(idx)))
        for layer in self.layers:
            x = layer(x)
        return self.ln_f(x)

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits (N, T, vocab_size) (the hidden states when there is no head)."""
        x = self.forward_features(idx)
        return self.head(x) if self.config.head else x


GPT2_SMALL = GPTConfig()
GPT_MINI = GPTConfig(vocab_size=96, context=64, num_layers=4, d_model=128, num_heads=4,
                     dropout=0.0)
GPT_TINY = GPTConfig(vocab_size=32, context=16, num_layers=2, d_model=16, num_heads=2,
                     dropout=0.0, tie_weights=False, activation="gelu")

ZOO_ENTRIES = [
    ZooEntry(
        name="gpt2_small",
        config=GPT2_SMALL,
        build=GPT,
        inputs={"idx": InputSpec(("N", "T"), "int64")},
        outputs={"output": ("N", "T", 50257)},
        description="GPT-2 small: 12 pre-LN causal blocks, d=768, 12 heads, vocabulary 50257, "
                    "context 1024, tied embeddings, 124,439,808 parameters",
        task="language modelling (next-token prediction)",
        tiny=False,
        int_high={"idx": 50257},
    ),
    ZooEntry(
        name="gpt_mini",
        config=GPT_MINI,
        build=GPT,
        inputs={"idx": InputSpec(("N", "T"), "int64")},
        outputs={"output": ("N", "T", 96)},
        description="mini GPT: 4 layers, d=128, 4 heads, vocabulary 96 (printable characters), "
                    "context 64, tied embeddings",
        task="character-level language modelling",
        int_high={"idx": 96},
    ),
    ZooEntry(
        name="gpt_tiny",
        config=GPT_TINY,
        build=GPT,
        inputs={"idx": InputSpec(("N", "T"), "int64")},
        outputs={"output": ("N", "T", 32)},
        description="tiny GPT: 2 layers, d=16, 2 heads, exact GELU, untied head",
        task="language modelling (next-token prediction)",
        int_high={"idx": 32},
    ),
]
