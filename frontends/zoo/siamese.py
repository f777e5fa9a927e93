"""Siamese networks (the book's glossary; Bromley et al. 1993, Hadsell et al. 2006): one
encoder applied to two (or three) inputs with the same weights, so that the distance of two
embeddings says whether the inputs show the same thing.

``Siamese.embed(x)`` maps images (N, C, H, W) to embeddings (N, D): convolution stages (3x3,
padding 1, ReLU, 2x2 max pooling), then an MLP; ``forward(x1, x2)`` is the Euclidean distance
of the two embeddings (N,), the verification score (small: same). Trained with
``F.contrastive_loss`` on pairs or ``F.triplet_margin_loss`` on triplets, every branch reads
the same parameters, so their gradients add up in the one training graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import Conv2d, Flatten, MaxPool2d, ReLU, Sequential
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import mlp_stack
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "Siamese", "SiameseConfig"]


@dataclass(frozen=True)
class SiameseConfig:
    """Input channels and side, conv stage widths, how many of the first stages end in 2x2
    max pooling (``None``: all), the MLP's hidden width, the dropout before its last Linear,
    its output width, which layer ``embed`` returns ("head": the MLP's output; "features":
    the flattened conv features, the MLP then being a projection head that only the training
    loss reads) and whether embeddings are L2-normalised."""

    in_channels: int = 1
    image_size: int = 8
    channels: tuple[int, ...] = (16, 32)
    hidden: int = 64
    embed_dim: int = 16
    normalize: bool = False
    pool_stages: int | None = None
    dropout: float = 0.0
    embed_layer: str = "head"

    def pools(self) -> int:
        """Number of conv stages followed by 2x2 max pooling."""
        return len(self.channels) if self.pool_stages is None else self.pool_stages

    def feature_size(self) -> int:
        """Side of the last feature map."""
        return self.image_size // 2 ** self.pools()

    def flat_features(self) -> int:
        """Length of the flattened feature vector entering the MLP."""
        width = self.channels[-1] if self.channels else self.in_channels
        return width * self.feature_size() ** 2


class Siamese(Module):
    """Twin encoders with shared weights: ``embed`` (one branch) and ``forward`` (the
    distance of two branches)."""

    def __init__(self, config: SiameseConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or SiameseConfig()
        if c.feature_size() < 1:
            raise OpError(f"SiameseConfig: {c.pools()} pooling stages shrink a "
                          f"{c.image_size}x{c.image_size} input below 1x1")
        if not 0 <= c.pools() <= len(c.channels):
            raise OpError(f"SiameseConfig: pool_stages must be in [0, {len(c.channels)}], got "
                          f"{c.pool_stages}")
        if c.embed_layer not in ("head", "features"):
            raise OpError(f"SiameseConfig: embed_layer must be 'head' or 'features', got "
                          f"{c.embed_layer!r}")
        stages: list[Module] = []
        width = c.in_channels
        for k, ch in enumerate(c.channels):
            stages += [Conv2d(width, ch, 3, padding=1), ReLU()]
            stages += [MaxPool2d(2)] if k < c.pools() else []
            width = ch
        self.features = Sequential(*stages)
        self.flatten = Flatten()
        self.head = mlp_stack((c.flat_features(), c.hidden, c.embed_dim), dropout=c.dropout)

    def project(self, x: Tensor) -> Tensor:
        """The MLP head's output (N, embed_dim) for images (N, C, H, W)."""
        return self.head(self.flatten(self.features(x)))

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings of images (N, C, H, W): the head's output (N, embed_dim), or with
        ``embed_layer="features"`` the flattened conv features (N, flat_features())."""
        flat = self.flatten(self.features(x))
        h = self.head(flat) if self.config.embed_layer == "head" else flat
        if self.config.normalize:
            h = h / ((h * h).sum(-1, keepdim=True) + 1e-12).sqrt()
        return h

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Euclidean distance (N,) between the embeddings of ``x1`` and ``x2``."""
        return F.pairwise_distance(self.embed(x1), self.embed(x2))


ZOO_ENTRIES = [
    ZooEntry(
        name="siamese",
        config=SiameseConfig(),
        build=Siamese,
        inputs={"x1": InputSpec(("N", 1, 8, 8)), "x2": InputSpec(("N", 1, 8, 8))},
        outputs={"output": ("N",)},
        description="shared-weight twin encoders (conv 16, conv 32, MLP 128-64-16) and the "
                    "Euclidean distance of the two embeddings",
        task="verification: are two 8x8 digits the same class (contrastive/triplet loss)",
    ),
]
