"""CapsNet (Sabour, Frosst and Hinton 2017, "Dynamic Routing Between Capsules").

conv + ReLU -> :class:`~..layers.PrimaryCapsules` (squashed vectors) -> digit capsules by
routing-by-agreement (:class:`~..layers.CapsuleRouting`, ``routing_iterations`` rounds unrolled
in the graph) -> class scores = capsule lengths. The optional decoder (an MLP ending in a
sigmoid) reconstructs the image from the digit capsules with every capsule but one masked out:
the true class when ``labels`` are given (training), else the longest capsule.

* ``capsnet``: scaled to scikit-learn's 8x8 digits: 3x3 conv (32) -> 3x3/2 primary capsules
  (8 types x 8D on a 4x4 grid = 128 capsules) -> 10 digit capsules of 16D, 3 routing rounds,
  decoder 160-128-256-64.
* ``capsnet_mnist``: the paper's network on 28x28 MNIST: 9x9 conv (256) -> 9x9/2 primary
  capsules (32 x 8D on 6x6 = 1,152) -> 10 x 16D, decoder 160-512-1024-784 (8,215,568
  parameters).

:func:`capsnet_loss` is the paper's objective: the margin loss plus ``recon_weight`` times the
summed squared reconstruction error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import CapsuleRouting, Conv2d, PrimaryCapsules, Sigmoid
from ..module import Module
from ..tensor import Tensor, as_tensor
from ..trace import InputSpec
from ._common import mlp_stack
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "CapsNet", "CapsNetConfig", "capsnet_loss"]


@dataclass(frozen=True)
class CapsNetConfig:
    """The layer sizes; ``decoder_hidden=()`` leaves the reconstruction decoder out."""

    in_channels: int = 1
    image_size: int = 8
    conv_channels: int = 32
    conv_kernel: int = 3
    conv_padding: int = 1
    primary_types: int = 8
    primary_dim: int = 8
    primary_kernel: int = 3
    primary_stride: int = 2
    primary_padding: int = 1
    num_classes: int = 10
    caps_dim: int = 16
    routing_iterations: int = 3
    decoder_hidden: tuple[int, ...] = (128, 256)

    def grid(self) -> int:
        """Side of the primary capsules' grid (the two convolutions' output size rule)."""
        s = self.image_size + 2 * self.conv_padding - self.conv_kernel + 1
        return (s + 2 * self.primary_padding - self.primary_kernel) // self.primary_stride + 1

    def primary_caps(self) -> int:
        """Number of primary capsules: one per type and grid position."""
        return self.primary_types * self.grid() ** 2


class CapsNet(Module):
    """``forward(x, labels=None)`` -> ``{"lengths": (N, classes), "recon": (N, pixels)}``
    (``recon`` only with a decoder)."""

    def __init__(self, config: CapsNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or CapsNetConfig()
        if c.grid() < 1:
            raise OpError(f"CapsNetConfig: the primary capsule grid is empty ({c.grid()})")
        self.conv = Conv2d(c.in_channels, c.conv_channels, c.conv_kernel, padding=c.conv_padding)
        self.primary = PrimaryCapsules(c.conv_channels, c.primary_types, c.primary_dim,
                                       c.primary_kernel, stride=c.primary_stride,
                                       padding=c.primary_padding)
        self.digits = CapsuleRouting(c.primary_caps(), c.primary_dim, c.num_classes, c.caps_dim,
                                     iterations=c.routing_iterations)
        self.pixels = c.in_channels * c.image_size ** 2
        self.decoder = (mlp_stack((c.num_classes * c.caps_dim, *c.decoder_hidden, self.pixels))
                        if c.decoder_hidden else None)
        self.out = Sigmoid() if c.decoder_hidden else None

    def capsules(self, x: Tensor) -> Tensor:
        """The digit capsules (N, classes, caps_dim) of images (N, C, H, W)."""
        return self.digits(self.primary(F.relu(self.conv(x))))

    def forward(self, x: Tensor, labels: Any = None) -> dict[str, Tensor]:
        """Class scores (capsule lengths in [0, 1)) and, with a decoder, the reconstruction
        from the capsule of ``labels`` (int64 (N,)) or, without them, of the longest one."""
        v = self.capsules(x)
        lengths = ((v * v).sum(-1) + 1e-9).sqrt()
        out = {"lengths": lengths}
        if self.decoder is not None and self.out is not None:
            c = self.config
            pick = lengths.argmax(-1) if labels is None else as_tensor(labels)
            mask = F.one_hot(pick, c.num_classes).to(v.dtype).unsqueeze(-1)  # (N, classes, 1)
            masked = (v * mask).reshape(v.shape[0], c.num_classes * c.caps_dim)
            out["recon"] = self.out(self.decoder(masked))
        return out

    def extra_repr(self) -> str:
        return f"routing_iterations={self.config.routing_iterations}"


def capsnet_loss(out: dict[str, Tensor], labels: Tensor, images: Tensor | None = None,
                 recon_weight: float = 0.005) -> Tensor:
    """Margin loss of ``out["lengths"]`` plus ``recon_weight`` times the per-image summed
    squared error of ``out["recon"]`` against ``images`` (flattened), averaged over the batch.
    The paper weighs 784 pixels by 0.0005; 0.005 keeps about that share for 64 pixels."""
    loss = F.margin_loss(out["lengths"], labels)
    if images is not None and "recon" in out:
        r = out["recon"]
        d = r - as_tensor(images).reshape(r.shape[0], r.shape[1])
        loss = loss + (d * d).sum(1).mean() * recon_weight
    return loss


_MNIST = CapsNetConfig(image_size=28, conv_channels=256, conv_kernel=9, conv_padding=0,
                       primary_types=32, primary_kernel=9, primary_padding=0,
                       decoder_hidden=(512, 1024))

ZOO_ENTRIES = [
    ZooEntry(
        name="capsnet",
        config=CapsNetConfig(),
        build=CapsNet,
        inputs={"x": InputSpec(("N", 1, 8, 8))},
        outputs={"lengths": ("N", 10), "recon": ("N", 64)},
        description="CapsNet for 8x8 digits: 3x3 conv 32, 128 primary capsules (8D), 10 digit "
                    "capsules (16D) by 3 routing rounds, decoder 160-128-256-64",
        task="image classification (scikit-learn digits) with capsule lengths as scores",
    ),
    ZooEntry(
        name="capsnet_mnist",
        config=_MNIST,
        build=CapsNet,
        inputs={"x": InputSpec(("N", 1, 28, 28))},
        outputs={"lengths": ("N", 10), "recon": ("N", 784)},
        description="Sabour et al. (2017) CapsNet: 9x9 conv 256, 1,152 primary capsules (8D), "
                    "10 digit capsules (16D) by 3 routing rounds, decoder 160-512-1024-784",
        task="image classification (MNIST 28x28 digits)",
        tiny=False,
    ),
]
