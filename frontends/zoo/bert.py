"""BERT: a bidirectional Transformer encoder (book section 5.3; Devlin et al. 2018).

Token, learned position and segment (token type) embeddings are summed and normalised
(``embeddings``), post-LN encoder blocks refine them (``layers.{i}``: self-attention, then the
GELU feed-forward block, each followed by a LayerNorm of the residual sum, as in the original
Transformer), and the optional ``pooler`` maps the first ([CLS]) token through a tanh layer.
``forward(input_ids, token_type_ids=None, attention_mask=None)`` returns
``{"last_hidden_state": (N, T, D), "pooler_output": (N, D)}`` as transformers' ``BertModel``
does; ``attention_mask`` is 1 at tokens and 0 at padding. Weights are initialised as BERT's:
N(0, 0.02), zero biases. ``BERT_BASE`` has 109,482,240 parameters. ``Bert.from_hf`` loads a
``save_pretrained`` directory (:mod:`.checkpoints.bert`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lbdl_graph.errors import ShapeError

from .. import functional as F
from .. import init
from ..layers import Dropout, Embedding, LayerNorm, LearnedPositionalEncoding, Linear, ModuleList
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, error
from ..trace import InputSpec
from ._registry import ZooEntry
from .transformer import TransformerBlock

__lbdl_user_code__ = True

__all__ = ["BERT_BASE", "ZOO_ENTRIES", "Bert", "BertConfig", "BertForMaskedLM",
           "BertForSequenceClassification"]


@dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters (defaults: BERT-base, uncased vocabulary)."""

    vocab_size: int = 30522
    max_position: int = 512
    type_vocab_size: int = 2
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    activation: str = "gelu"
    eps: float = 1e-12
    pooler: bool = True
    init_std: float = 0.02


class BertEmbeddings(Module):
    """``norm(word(ids) + position + token_type(types))``, then dropout."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word = Embedding(c.vocab_size, c.d_model)
        self.position = LearnedPositionalEncoding(c.max_position, c.d_model)
        self.token_type = Embedding(c.type_vocab_size, c.d_model)
        self.norm = LayerNorm(c.d_model, eps=c.eps)
        self.drop = Dropout(c.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """(N, T) token ids (and segment ids, default all 0) -> (N, T, D)."""
        x = self.position(self.word(input_ids))
        types = (self.token_type.weight[0] if token_type_ids is None
                 else self.token_type(token_type_ids))
        return self.drop(self.norm(x + types))


class Bert(Module):
    """The encoder; see the module doc."""

    def __init__(self, config: BertConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or BertConfig()
        with init.skip_random():  # every weight is drawn below
            self.embeddings = BertEmbeddings(c)
            self.layers = ModuleList(
                TransformerBlock(c.d_model, c.num_heads, c.d_ff, c.dropout, c.activation,
                                 norm_first=False, eps=c.eps) for _ in range(c.num_layers))
            if c.pooler:
                self.pooler = Linear(c.d_model, c.d_model)
        for name, p in self.named_parameters():
            if p.data.ndim >= 2:
                init.normal_(p, 0.0, c.init_std)
            elif name.endswith("bias"):
                init.zeros_(p)

    @classmethod
    def from_hf(cls, path: str | os.PathLike[str], *, strict: bool = True) -> Bert:
        """A Bert with the weights of a transformers BERT ``save_pretrained`` directory
        (``config.json`` + ``model.safetensors``)."""
        from .checkpoints.bert import load_bert

        return load_bert(path, strict=strict)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Token ids (N, T) -> last hidden states (N, T, D) and the pooled [CLS] state."""
        x = self.embeddings(input_ids, token_type_ids)
        pad = None if attention_mask is None else attention_mask == 0
        for layer in self.layers:
            x = layer(x, pad)
        out = {"last_hidden_state": x}
        if self.config.pooler:
            out["pooler_output"] = self.pooler(x[:, 0]).tanh()
        return out


class BertForMaskedLM(Module):
    """BERT's pre-training head on the encoder: ``forward(input_ids, attention_mask=None)`` ->
    vocabulary logits (N, T, V) from a dense + GELU + LayerNorm transform of every hidden state
    and an output layer tied to the token embedding table (plus its own bias), as BERT's MLM;
    ``masked_positions`` limits the logits to the positions that were masked."""

    def __init__(self, config: BertConfig | None = None) -> None:
        super().__init__()
        self.bert = Bert(config)
        c = self.bert.config
        self.transform = Linear(c.d_model, c.d_model)
        self.norm = LayerNorm(c.d_model, eps=c.eps)
        self.decoder_bias = Parameter(np.zeros(c.vocab_size, np.float32))
        init.normal_(self.transform.weight, 0.0, c.init_std)
        init.zeros_(self.transform.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                masked_positions: Tensor | None = None) -> Tensor:
        """Logits over the vocabulary at every position (N, T, V), or only at the int
        ``masked_positions`` (N, K) of each row (N, K, V): the original BERT's
        ``masked_lm_positions``, which spares the output layer the unmasked positions."""
        h = self.bert(input_ids, None, attention_mask)["last_hidden_state"]
        if masked_positions is not None:
            if masked_positions.ndim != 2 or not masked_positions.dtype.is_integer:
                raise error(ShapeError, "masked_positions must be (N, K) integer positions, "
                            f"got {masked_positions.type}")
            d = self.bert.config.d_model
            h = h.gather(1, masked_positions.unsqueeze(-1).expand(-1, -1, d))
        h = self.norm(F.gelu(self.transform(h)))
        return h @ self.bert.embeddings.word.weight.T + self.decoder_bias


class BertForSequenceClassification(Module):
    """The encoder, a pooled state, dropout and a linear classifier:
    ``forward(input_ids, attention_mask=None)`` -> class logits (N, num_labels). ``pooling``
    is ``"cls"`` (BERT's tanh pooler on the first token; needs ``config.pooler``) or ``"mean"``
    (the mean hidden state over the unmasked tokens). ``bert`` may be loaded from a
    pre-trained :class:`BertForMaskedLM`'s ``bert``."""

    def __init__(self, config: BertConfig | None = None, num_labels: int = 2,
                 pooling: str = "cls") -> None:
        super().__init__()
        self.bert = Bert(config)
        if pooling not in ("cls", "mean"):
            raise error(ShapeError, f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if pooling == "cls" and not self.bert.config.pooler:
            raise error(ShapeError, "pooling='cls' needs a BertConfig with pooler=True")
        self.pooling = pooling
        c = self.bert.config
        self.dropout = Dropout(c.dropout)
        self.classifier = Linear(c.d_model, num_labels)
        init.normal_(self.classifier.weight, 0.0, c.init_std)
        init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Class logits from the pooled hidden states."""
        out = self.bert(input_ids, None, attention_mask)
        if self.pooling == "cls":
            return self.classifier(self.dropout(out["pooler_output"]))
        h = out["last_hidden_state"]
        if attention_mask is None:
            pooled = h.mean(1)
        else:
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / (m.sum(1) + 1e-6)
        return self.classifier(self.dropout(pooled))


BERT_BASE = BertConfig()
BERT_TINY = BertConfig(vocab_size=64, max_position=32, d_model=32, num_layers=2, num_heads=4,
                       d_ff=64, dropout=0.0)

ZOO_ENTRIES = [
    ZooEntry(
        name="bert_tiny",
        config=BERT_TINY,
        build=Bert,
        inputs={"input_ids": InputSpec(("N", "T"), "int64")},
        outputs={"last_hidden_state": ("N", "T", 32), "pooler_output": ("N", 32)},
        description="tiny BERT encoder: 2 post-LN blocks, d=32, 4 heads, exact GELU, token, "
                    "position and segment embeddings, tanh pooler",
        task="text encoding (masked-language-model pre-training, classification)",
        int_high={"input_ids": 64},
    ),
]
