"""The Transformer (book section 5.3, figures 5.6 and 5.7; Vaswani et al. 2017) and the blocks
GPT, ViT and CLIP reuse.

:class:`TransformerBlock` is the self-attention block followed by the feed-forward block, with
the layer normalisation first (``norm_first``, Radford et al. as in the book's figure 5.6) or
after the residual sum (the original). :class:`DecoderBlock` adds the cross-attention block.
The encoder–decoder :class:`Transformer` embeds source and target tokens (scaled by sqrt(d) and
with the sinusoidal positional encoding), runs the encoder, then the decoder with causal
self-attention and cross-attention to the encoder's output, and projects to target-vocabulary
logits. Source and target lengths may be symbolic (``"S"`` and ``"T"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..layers import (
    Dropout,
    Embedding,
    Identity,
    LayerNorm,
    Linear,
    ModuleList,
    MultiheadAttention,
    SinusoidalPositionalEncoding,
)
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import activation
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = [
    "ZOO_ENTRIES",
    "DecoderBlock",
    "FeedForward",
    "Transformer",
    "TransformerBlock",
    "TransformerConfig",
]


class FeedForward(Module):
    """The position-wise MLP: ``fc2(dropout(act(fc1(x))))`` with one hidden layer of d_ff."""

    def __init__(self, d_model: int, d_ff: int, act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = Linear(d_model, d_ff)
        self.act = activation(act)
        self.dropout = Dropout(dropout)
        self.fc2 = Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to every position."""
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class TransformerBlock(Module):
    """Self-attention block then feed-forward block, each in a residual connection:
    ``ln1``, ``attn``, ``ln2``, ``mlp``. ``causal`` masks future positions."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0,
                 act: str = "gelu", norm_first: bool = True, causal: bool = False,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.causal = causal
        self.ln1 = LayerNorm(d_model, eps=eps)
        self.attn = MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.ln2 = LayerNorm(d_model, eps=eps)
        self.mlp = FeedForward(d_model, d_ff, act, dropout)
        self.dropout = Dropout(dropout)

    def _sa(self, h: Tensor, pad: Tensor | None) -> Tensor:
        out, _ = self.attn(h, h, h, key_padding_mask=pad, need_weights=False,
                           is_causal=self.causal)
        return self.dropout(out)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """(N, T, D) -> (N, T, D); ``key_padding_mask`` (N, T) is True at padding."""
        if self.norm_first:
            x = x + self._sa(self.ln1(x), key_padding_mask)
            return x + self.dropout(self.mlp(self.ln2(x)))
        x = self.ln1(x + self._sa(x, key_padding_mask))
        return self.ln2(x + self.dropout(self.mlp(x)))


class DecoderBlock(Module):
    """Causal self-attention, cross-attention to the encoder's output ``memory``, then the
    feed-forward block: ``ln1``, ``attn``, ``ln2``, ``cross_attn``, ``ln3``, ``mlp``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0,
                 act: str = "relu", norm_first: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln1 = LayerNorm(d_model, eps=eps)
        self.attn = MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.ln2 = LayerNorm(d_model, eps=eps)
        self.cross_attn = MultiheadAttention(d_model, num_heads, dropout=dropout,
                                             batch_first=True)
        self.ln3 = LayerNorm(d_model, eps=eps)
        self.mlp = FeedForward(d_model, d_ff, act, dropout)
        self.dropout = Dropout(dropout)

    def _sa(self, h: Tensor) -> Tensor:
        return self.dropout(self.attn(h, h, h, need_weights=False, is_causal=True)[0])

    def _ca(self, h: Tensor, memory: Tensor, pad: Tensor | None) -> Tensor:
        out, _ = self.cross_attn(h, memory, memory, key_padding_mask=pad, need_weights=False)
        return self.dropout(out)

    def forward(self, x: Tensor, memory: Tensor, memory_padding_mask: Tensor | None = None
                ) -> Tensor:
        """(N, T, D) attending to itself (causally) and to memory (N, S, D)."""
        if self.norm_first:
            x = x + self._sa(self.ln1(x))
            x = x + self._ca(self.ln2(x), memory, memory_padding_mask)
            return x + self.dropout(self.mlp(self.ln3(x)))
        x = self.ln1(x + self._sa(x))
        x = self.ln2(x + self._ca(x, memory, memory_padding_mask))
        return self.ln3(x + self.dropout(self.mlp(x)))


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the encoder–decoder (defaults: the paper's base model with a shared
    37,000-token vocabulary and tied embeddings). ``pad_id`` masks source padding tokens."""

    src_vocab: int = 37_000
    tgt_vocab: int = 37_000
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    share_embeddings: bool = True
    tie_output: bool = True
    pad_id: int | None = None


class Encoder(Module):
    """A stack of self-attention blocks (``layers``), plus a final LayerNorm (``norm``) when the
    blocks normalise first."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.layers = ModuleList(
            TransformerBlock(c.d_model, c.num_heads, c.d_ff, c.dropout, c.activation,
                             c.norm_first) for _ in range(c.num_encoder_layers))
        self.norm: Module = LayerNorm(c.d_model) if c.norm_first else Identity()

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        """Refine (N, S, D) representations."""
        for layer in self.layers:
            x = layer(x, pad)
        return self.norm(x)


class Decoder(Module):
    """A stack of decoder blocks (``layers``), plus a final LayerNorm when normalising first."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.layers = ModuleList(
            DecoderBlock(c.d_model, c.num_heads, c.d_ff, c.dropout, c.activation, c.norm_first)
            for _ in range(c.num_decoder_layers))
        self.norm: Module = LayerNorm(c.d_model) if c.norm_first else Identity()

    def forward(self, x: Tensor, memory: Tensor, pad: Tensor | None = None) -> Tensor:
        """Decode (N, T, D) given the encoder output (N, S, D)."""
        for layer in self.layers:
            x = layer(x, memory, pad)
        return self.norm(x)


class Transformer(Module):
    """Encoder–decoder for sequence-to-sequence translation (book figure 5.7).

    ``forward(src, tgt)`` takes int64 token ids (N, S) and (N, T) (the target shifted right) and
    returns next-token logits (N, T, tgt_vocab).
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TransformerConfig()
        self.src_emb = Embedding(c.src_vocab, c.d_model)
        share = c.share_embeddings and c.src_vocab == c.tgt_vocab
        self.tgt_emb = self.src_emb if share else Embedding(c.tgt_vocab, c.d_model)
        self.pos = SinusoidalPositionalEncoding(c.d_model, dropout=c.dropout)
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.generator = Linear(c.d_model, c.tgt_vocab, bias=False)
        if c.tie_output:
            self.generator.weight = self.tgt_emb.weight
        self.scale = math.sqrt(c.d_model)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor | None]:
        """The encoder's output (N, S, D) and the source padding mask (or None)."""
        c = self.config
        pad = None if c.pad_id is None else src == c.pad_id
        return self.encoder(self.pos(self.src_emb(src) * self.scale), pad), pad

    def decode(self, tgt: Tensor, memory: Tensor, pad: Tensor | None = None) -> Tensor:
        """Next-token logits (N, T, tgt_vocab) for the target prefix ``tgt``."""
        y = self.decoder(self.pos(self.tgt_emb(tgt) * self.scale), memory, pad)
        return self.generator(y)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Logits (N, T, tgt_vocab)."""
        memory, pad = self.encode(src)
        return self.decode(tgt, memory, pad)


TRANSFORMER_TINY = TransformerConfig(src_vocab=40, tgt_vocab=48, d_model=32, num_heads=4,
                                     num_encoder_layers=2, num_decoder_layers=2, d_ff=64,
                                     share_embeddings=False, tie_output=True, pad_id=0)

_SEQ_INPUTS = {"src": InputSpec(("N", "S"), "int64"), "tgt": InputSpec(("N", "T"), "int64")}

ZOO_ENTRIES = [
    ZooEntry(
        name="transformer_base",
        config=TransformerConfig(),
        build=Transformer,
        inputs=dict(_SEQ_INPUTS),
        outputs={"output": ("N", "T", 37_000)},
        description="Transformer base (Vaswani et al. 2017): 6+6 post-LN layers, d=512, 8 heads, "
                    "d_ff=2048, shared 37k vocabulary, tied embeddings",
        task="sequence-to-sequence translation",
        tiny=False,
        int_high={"src": 37_000, "tgt": 37_000},
    ),
    ZooEntry(
        name="transformer_tiny",
        config=TRANSFORMER_TINY,
        build=Transformer,
        inputs=dict(_SEQ_INPUTS),
        outputs={"output": ("N", "T", 48)},
        description="encoder-decoder Transformer: 2+2 post-LN layers, d=32, 4 heads, source "
                    "padding mask (id 0), output tied to the target embedding",
        task="sequence-to-sequence translation",
        int_high={"src": 40, "tgt": 48},
    ),
]
