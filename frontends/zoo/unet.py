"""U-Net for semantic segmentation (book section 6.4; Ronneberger et al. 2015).

A contracting path of double 3x3 convolutions and 2x2 max pooling, a bottleneck, and an
expanding path that upsamples with 2x2 stride-2 transposed convolutions and concatenates the
contracting path's feature maps at the same resolution (skip connections) before two more
convolutions; a 1x1 convolution gives per-pixel class logits. Padding keeps the sizes, so the
output has the input's height and width (which must be divisible by 2^(levels - 1)).
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d, ModuleList, ReLU, Sequential
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "DoubleConv", "UNet", "UNetConfig"]


@dataclass(frozen=True)
class UNetConfig:
    """``widths[i]`` channels at level i (the last is the bottleneck), ``num_classes`` output
    maps, optional BatchNorm after each convolution."""

    in_channels: int = 3
    num_classes: int = 4
    widths: tuple[int, ...] = (8, 16, 32)
    batch_norm: bool = True


class DoubleConv(Sequential):
    """(3x3 conv, [BatchNorm], ReLU) twice, padding 1."""

    def __init__(self, cin: int, cout: int, batch_norm: bool = True) -> None:
        layers: list[Module] = []
        for a in (cin, cout):
            layers.append(Conv2d(a, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(BatchNorm2d(cout))
            layers.append(ReLU())
        super().__init__(*layers)


class UNet(Module):
    """``forward(x)``: images (N, C, H, W) -> per-pixel logits (N, num_classes, H, W)."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or UNetConfig()
        if len(c.widths) < 2:
            raise OpError("UNetConfig: widths needs at least two levels")
        w = c.widths
        self.down = ModuleList(DoubleConv(a, b, c.batch_norm)
                               for a, b in zip((c.in_channels, *w[:-2]), w[:-1], strict=True))
        self.pool = MaxPool2d(2)
        self.bottleneck = DoubleConv(w[-2], w[-1], c.batch_norm)
        self.up = ModuleList(ConvTranspose2d(w[i + 1], w[i], 2, stride=2)
                             for i in reversed(range(len(w) - 1)))
        self.dec = ModuleList(DoubleConv(2 * w[i], w[i], c.batch_norm)
                              for i in reversed(range(len(w) - 1)))
        self.head = Conv2d(w[0], c.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Contract (keeping each level's features), expand with skip concatenations."""
        skips: list[Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(F.cat([skip, up(x)], 1))
        return self.head(x)


ZOO_ENTRIES = [
    ZooEntry(
        name="unet_tiny",
        config=UNetConfig(),
        build=UNet,
        inputs={"x": InputSpec(("N", 3, 32, 32))},
        outputs={"output": ("N", 4, 32, 32)},
        description="3-level U-Net (8-16-32 channels, BatchNorm), transposed-conv upsampling, "
                    "skip concatenations, 1x1 head",
        task="semantic segmentation (per-pixel logits, 4 classes)",
    ),
]
