"""The Vision Transformer (book section 5.3, figure 5.9; Dosovitskiy et al. 2020).

The image is cut into P x P patches by a convolution with kernel and stride P
(``patch_embed``, the book's matrix W^E applied to every flattened patch), a trainable CLS token
E_0 is prepended (expanded to the batch with ``broadcast_like``, so N stays symbolic), a learned
position embedding is added, pre-LN encoder blocks (``layers.{i}``) refine the M+1 tokens and
the CLS token's final state goes through the classification ``head``: a Linear by default
(torchvision's layout: ViT-B/16 has 86,567,656 parameters for 1000 classes), or the book's MLP
when ``head_hidden`` lists hidden widths (tanh between layers, as in the original pre-training
head). ``num_classes=0`` leaves the head out (an image encoder, as in CLIP).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lbdl_graph.errors import OpError

from .. import functional as F
from .. import init
from ..layers import Conv2d, Dropout, Identity, LayerNorm, ModuleList
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import mlp_stack
from ._registry import ZooEntry
from .transformer import TransformerBlock

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "ViT", "ViTConfig"]


@dataclass(frozen=True)
class ViTConfig:
    """Image and patch sizes, transformer width/depth/heads, MLP width ``d_ff`` and the head."""

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_classes: int = 1000
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    d_ff: int = 3072
    dropout: float = 0.0
    head_hidden: tuple[int, ...] = ()
    eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        """M, the number of patches."""
        return (self.image_size // self.patch_size) ** 2


class ViT(Module):
    """``forward(x)``: images (N, C, H, W) -> logits (N, num_classes)."""

    def __init__(self, config: ViTConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ViTConfig()
        if c.image_size % c.patch_size:
            raise OpError(f"ViTConfig: patch size {c.patch_size} does not divide image size "
                          f"{c.image_size}")
        self.patch_embed = Conv2d(c.in_channels, c.d_model, c.patch_size, stride=c.patch_size)
        self.cls_token = Parameter(np.zeros((1, 1, c.d_model), dtype=np.float32))
        self.pos_embed = Parameter(np.zeros((1, c.num_patches + 1, c.d_model), dtype=np.float32))
        init.normal_(self.pos_embed, 0.0, 0.02)
        self.drop = Dropout(c.dropout)
        self.layers = ModuleList(
            TransformerBlock(c.d_model, c.num_heads, c.d_ff, c.dropout, "gelu", norm_first=True,
                             eps=c.eps) for _ in range(c.num_layers))
        self.norm = LayerNorm(c.d_model, eps=c.eps)
        if c.num_classes == 0:
            self.head: Module = Identity()
        elif c.head_hidden:
            self.head = mlp_stack((c.d_model, *c.head_hidden, c.num_classes), "tanh")
        else:
            self.head = mlp_stack((c.d_model, c.num_classes))

    @classmethod
    def from_hf(cls, path: str | os.PathLike[str], *, strict: bool = True) -> ViT:
        """A ViT with the weights of a transformers ViT ``save_pretrained`` directory
        (``ViTModel``: the CLS features; ``ViTForImageClassification``: the logits)."""
        from .checkpoints.vit import load_vit_hf

        return load_vit_hf(path, strict=strict)

    @classmethod
    def from_torchvision(cls, path: str | os.PathLike[str], *, num_heads: int | None = None,
                         strict: bool = True) -> ViT:
        """A ViT with the weights of a torchvision ViT state dict saved with safetensors."""
        from .checkpoints.torchvision import load_vit_torchvision

        return load_vit_torchvision(path, num_heads=num_heads, strict=strict)

    def patchify(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> the (N, M, D) sequence of embedded patches."""
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def forward_features(self, x: Tensor) -> Tensor:
        """The CLS token's final state (N, D)."""
        tokens = self.patchify(x)
        cls = self.cls_token.expand_as(tokens[:, :1])
        h = self.drop(F.cat([cls, tokens], 1) + self.pos_embed)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) (features (N, D) when ``num_classes=0``)."""
        return self.head(self.forward_features(x))


VIT_B16 = ViTConfig()
VIT_TINY = ViTConfig(image_size=32, patch_size=8, num_classes=10, d_model=32, num_layers=2,
                     num_heads=4, d_ff=64, head_hidden=(32, 32))

ZOO_ENTRIES = [
    ZooEntry(
        name="vit_b16",
        config=VIT_B16,
        build=ViT,
        inputs={"x": InputSpec(("N", 3, 224, 224))},
        outputs={"output": ("N", 1000)},
        description="ViT-B/16: 196 patches of 16x16 + CLS, 12 pre-LN blocks, d=768, 12 heads, "
                    "linear head, 86,567,656 parameters",
        task="image classification (ImageNet, 224x224)",
        tiny=False,
    ),
    ZooEntry(
        name="vit_tiny",
        config=VIT_TINY,
        build=ViT,
        inputs={"x": InputSpec(("N", 3, 32, 32))},
        outputs={"output": ("N", 10)},
        description="tiny ViT: 16 patches of 8x8 + CLS, 2 blocks, d=32, 4 heads, the book's "
                    "two-hidden-layer MLP head",
        task="image classification (CIFAR-10, 32x32)",
    ),
]
