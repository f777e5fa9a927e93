"""A sentence embedding model for retrieval (book section 8.1, retrieval-augmented generation).

``TextEmbedder`` maps token ids (N, T), 0 being padding, to unit vectors (N, D): token
embeddings, a masked mean over the sequence (padding does not count), a two-layer tanh MLP
and L2 normalisation, so that a dot product is a cosine similarity. Trained as a Siamese
(shared-weight) dual encoder with ``F.info_nce`` on (query, passage) pairs, it ranks the
passages of a corpus for a query by one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers import Embedding, Linear
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "EmbedderConfig", "TextEmbedder"]


@dataclass(frozen=True)
class EmbedderConfig:
    """Vocabulary (id 0 is padding), token embedding width, hidden width and output width."""

    vocab_size: int = 1000
    d_model: int = 64
    hidden: int = 128
    out_dim: int = 64


class TextEmbedder(Module):
    """``forward(ids)``: token ids (N, T), 0 = padding -> L2-normalised embeddings (N, D)."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or EmbedderConfig()
        self.tok = Embedding(c.vocab_size, c.d_model)
        self.fc1 = Linear(c.d_model, c.hidden)
        self.fc2 = Linear(c.hidden, c.out_dim)

    def forward(self, ids: Tensor) -> Tensor:
        """Masked mean pooling of the token embeddings, an MLP and L2 normalisation."""
        emb = self.tok(ids)
        mask = (ids != 0).to(emb.dtype).unsqueeze(-1)
        pooled = (emb * mask).sum(1) / (mask.sum(1) + 1e-6)
        h = self.fc2(self.fc1(pooled).tanh())
        return h / ((h * h).sum(-1, keepdim=True) + 1e-12).sqrt()


ZOO_ENTRIES = [
    ZooEntry(
        name="text_embedder",
        config=EmbedderConfig(vocab_size=512, d_model=32, hidden=64, out_dim=32),
        build=TextEmbedder,
        inputs={"ids": InputSpec(("N", "T"), "int64")},
        outputs={"output": ("N", 32)},
        description="masked mean of 32-d token embeddings, 32-64-32 tanh MLP, L2-normalised",
        task="sentence embedding for retrieval",
        int_high={"ids": 512},
    ),
]
