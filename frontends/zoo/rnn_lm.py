"""Recurrent language models (book, "The missing bits", and section 7.1): token embedding, a
recurrent stack (RNN, GRU or LSTM: unrolled at a static sequence length, one scan per layer at a
symbolic one) and a linear head to next-token logits, optionally tied to the embedding (which
needs embed_dim == hidden_size). The zoo entries trace at a static length.

* ``char_rnn``: Karpathy's char-rnn shape: one GRU layer over 96 printable characters.
* ``lstm_lm``: a 2-layer LSTM word model with tied input and output embeddings (Press and Wolf
  2017), dropout between layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdl_graph.errors import OpError

from ..layers import GRU, LSTM, RNN, Dropout, Embedding, Linear
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "RNNLMConfig", "RecurrentLM"]

_CELLS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


@dataclass(frozen=True)
class RNNLMConfig:
    """Vocabulary, embedding and hidden widths, ``cell`` ("rnn", "gru" or "lstm"), depth."""

    vocab_size: int = 96
    embed_dim: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    cell: str = "gru"
    dropout: float = 0.0
    tie_weights: bool = False


class RecurrentLM(Module):
    """``forward(idx)``: int64 token ids (N, T) -> logits (N, T, vocab_size)."""

    def __init__(self, config: RNNLMConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or RNNLMConfig()
        if c.cell not in _CELLS:
            raise OpError(f"RNNLMConfig: cell must be one of {sorted(_CELLS)}, got {c.cell!r}")
        if c.tie_weights and c.embed_dim != c.hidden_size:
            raise OpError("RNNLMConfig: tie_weights needs embed_dim == hidden_size")
        self.embed = Embedding(c.vocab_size, c.embed_dim)
        self.drop = Dropout(c.dropout)
        self.rnn = _CELLS[c.cell](c.embed_dim, c.hidden_size, num_layers=c.num_layers,
                                  batch_first=True, dropout=c.dropout)
        self.head = Linear(c.hidden_size, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embed.weight

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits at every position."""
        out, _ = self.rnn(self.drop(self.embed(idx)))
        return self.head(self.drop(out))


CHAR_RNN = RNNLMConfig()
LSTM_LM = RNNLMConfig(vocab_size=1000, embed_dim=64, hidden_size=64, num_layers=2, cell="lstm",
                      dropout=0.2, tie_weights=True)

ZOO_ENTRIES = [
    ZooEntry(
        name="char_rnn",
        config=CHAR_RNN,
        build=RecurrentLM,
        inputs={"idx": InputSpec(("N", 16), "int64")},
        outputs={"output": ("N", 16, 96)},
        description="character GRU language model: Embedding(96, 32), GRU 64, head 96; "
                    "unrolled over 16 steps",
        task="character-level language modelling",
        int_high={"idx": 96},
    ),
    ZooEntry(
        name="lstm_lm",
        config=LSTM_LM,
        build=RecurrentLM,
        inputs={"idx": InputSpec(("N", 12), "int64")},
        outputs={"output": ("N", 12, 1000)},
        description="word LSTM language model: Embedding(1000, 64), 2-layer LSTM 64 with dropout "
                    "0.2, tied head; unrolled over 12 steps",
        task="word-level language modelling",
        int_high={"idx": 1000},
    ),
]
