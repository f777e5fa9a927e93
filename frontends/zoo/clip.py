"""CLIP: contrastive image-text pre-training (book section 6.6, text-image
representations; Radford et al. 2021), tiny.

A ViT image encoder (``visual``, its CLS feature) and a GPT-style causal text encoder
(``text``, the feature at the end-of-text token, the largest id of each sequence as in CLIP's
tokenizer) are projected without bias to a shared ``embed_dim``, L2-normalised, and compared:
``logits_per_image = exp(logit_scale) * img @ txt.T`` with a learned temperature
(``logit_scale`` starts at log(1/0.07)). The training loss is the symmetric cross-entropy with
the diagonal as targets (:func:`clip_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lbdl_graph import ops

from ..layers import Linear
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry
from .gpt import GPT, GPTConfig
from .vit import ViT, ViTConfig

__lbdl_user_code__ = True

__all__ = ["CLIP", "ZOO_ENTRIES", "CLIPConfig", "clip_loss", "identity_like", "l2_normalize"]


@dataclass(frozen=True)
class CLIPConfig:
    """The two encoders' sizes, the shared embedding size and the initial temperature."""

    image_size: int = 32
    patch_size: int = 8
    in_channels: int = 3
    vision_width: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vocab_size: int = 64
    context: int = 16
    text_width: int = 32
    text_layers: int = 2
    text_heads: int = 4
    embed_dim: int = 16
    temperature: float = 0.07


def l2_normalize(x: Tensor, dim: int = -1, eps: float = 1e-12) -> Tensor:
    """``x / max(||x||, eps)`` along ``dim``."""
    return x / (x * x).sum(dim, keepdim=True).sqrt().clamp(min=eps)


class CLIP(Module):
    """``forward(images, tokens)``: (N, C, H, W) images and (N, T) int64 token ids ->
    ``{"logits_per_image": (N, N), "logits_per_text": (N, N)}``."""

    def __init__(self, config: CLIPConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or CLIPConfig()
        self.visual = ViT(ViTConfig(image_size=c.image_size, patch_size=c.patch_size,
                                    in_channels=c.in_channels, num_classes=0,
                                    d_model=c.vision_width, num_layers=c.vision_layers,
                                    num_heads=c.vision_heads, d_ff=4 * c.vision_width))
        self.text = GPT(GPTConfig(vocab_size=c.vocab_size, context=c.context,
                                  num_layers=c.text_layers, d_model=c.text_width,
                                  num_heads=c.text_heads, dropout=0.0, activation="gelu",
                                  head=False))
        self.image_proj = Linear(c.vision_width, c.embed_dim, bias=False)
        self.text_proj = Linear(c.text_width, c.embed_dim, bias=False)
        self.logit_scale = Parameter(np.asarray(math.log(1.0 / c.temperature), np.float32))

    def encode_image(self, images: Tensor) -> Tensor:
        """Normalised image embeddings (N, embed_dim)."""
        return l2_normalize(self.image_proj(self.visual(images)))

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Normalised text embeddings (N, embed_dim), read at each sequence's end-of-text token
        (its largest id)."""
        h = self.text(tokens)  # (N, T, width)
        eot = tokens.argmax(-1).reshape(-1, 1, 1)  # (N, 1, 1)
        feat = h.gather(1, eot.expand_as(h[:, :1])).squeeze(1)
        return l2_normalize(self.text_proj(feat))

    def forward(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        """Scaled cosine similarities of every image with every text."""
        img, txt = self.encode_image(images), self.encode_text(tokens)
        logits = (img @ txt.T) * self.logit_scale.exp()
        return {"logits_per_image": logits, "logits_per_text": logits.T}


def identity_like(x: Tensor) -> Tensor:
    """A float identity matrix of ``x``'s square shape (symbolic sizes allowed)."""
    rows = Tensor(ops.iota_like(x.value, axis=0))
    cols = Tensor(ops.iota_like(x.value, axis=1))
    return (rows == cols).to(x.dtype)


def clip_loss(logits_per_image: Tensor) -> Tensor:
    """Symmetric InfoNCE: the mean of the row-wise (image -> text) and column-wise
    cross-entropies, the i-th image matching the i-th text."""
    eye = identity_like(logits_per_image)
    rows = (logits_per_image.log_softmax(-1) * eye).sum(-1)
    cols = (logits_per_image.log_softmax(0) * eye).sum(0)
    return (rows.mean() + cols.mean()) * -0.5


ZOO_ENTRIES = [
    ZooEntry(
        name="clip_tiny",
        config=CLIPConfig(),
        build=CLIP,
        inputs={"images": InputSpec(("N", 3, 32, 32)),
                "tokens": InputSpec(("N", "T"), "int64")},
        outputs={"logits_per_image": ("N", "N"), "logits_per_text": ("N", "N")},
        description="tiny CLIP: ViT image encoder (2 blocks, d=32) and causal text transformer "
                    "(2 blocks, d=32), projections to 16, normalised, learned temperature",
        task="contrastive image-text pre-training / zero-shot classification",
        int_high={"tokens": 64},
    ),
]
