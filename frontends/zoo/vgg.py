"""VGG networks (book sections 5.2 and 6.3; the seed course's chapter 7.6; Simonyan and Zisserman
2014), torchvision's layout.

``features`` is a stack of 3x3 convolutions (padding 1, ReLU; with ``batch_norm`` a BatchNorm
between convolution and ReLU, as ``vgg16_bn``) and 2x2 max poolings, listed in ``layers`` as
widths and ``"M"``; an adaptive average pooling to 7x7 and the ``classifier`` (25088-4096, ReLU,
Dropout, 4096-4096, ReLU, Dropout, 4096-classes) follow. Names are torchvision's
(``features.0``, ``features.2``, ``features.5``, ..., ``classifier.0``, ``classifier.3``,
``classifier.6``), so a torchvision state dict loads as is; VGG-16 has exactly 138,357,544
parameters. The weights start as torchvision's: He normal (fan out) convolutions, N(0, 0.01)
linear layers, zero biases.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import init
from ..layers import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["VGG", "VGG11", "VGG13", "VGG16", "VGG19", "ZOO_ENTRIES", "VGGConfig",
           "vgg_parameters"]

Layers = tuple[int | str, ...]

VGG11: Layers = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG13: Layers = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16: Layers = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512, "M")
VGG19: Layers = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                 512, 512, 512, 512, "M")


@dataclass(frozen=True)
class VGGConfig:
    """The feature stack ``layers`` (convolution widths and ``"M"`` max poolings),
    ``batch_norm``, the classifier's hidden width, the adaptive pooling size, dropout and the
    class count."""

    layers: Layers = VGG16
    batch_norm: bool = False
    hidden: int = 4096
    pool_size: int = 7
    num_classes: int = 1000
    in_channels: int = 3
    dropout: float = 0.5

    def widths(self) -> list[int]:
        """The convolution widths in order."""
        return [int(v) for v in self.layers if v != "M"]


def vgg_parameters(c: VGGConfig) -> int:
    """The parameter count of ``c`` (BatchNorm buffers not counted), without building it."""
    chans = [c.in_channels, *c.widths()]
    convs = sum(9 * a * b + b + (2 * b if c.batch_norm else 0)
                for a, b in itertools.pairwise(chans))
    flat = chans[-1] * c.pool_size ** 2
    return convs + flat * c.hidden + c.hidden + c.hidden * c.hidden + c.hidden \
        + c.hidden * c.num_classes + c.num_classes


class VGG(Module):
    """``features``, ``avgpool``, ``flatten`` and the ``classifier``, as torchvision's
    ``VGG``."""

    def __init__(self, config: VGGConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VGGConfig()
        bad = [v for v in c.layers if v != "M" and (not isinstance(v, int) or v < 1)]
        if bad or not c.widths() or c.hidden < 1 or c.pool_size < 1:
            raise OpError(f"VGGConfig: layers must be positive widths and 'M' (at least one "
                          f"width), hidden and pool_size positive; got layers={c.layers}, "
                          f"hidden={c.hidden}, pool_size={c.pool_size}")
        layers: list[Module] = []
        cin = c.in_channels
        with init.skip_random():  # drawn once below, with torchvision's initialisation
            for v in c.layers:
                if v == "M":
                    layers.append(MaxPool2d(2, stride=2))
                    continue
                layers.append(Conv2d(cin, int(v), 3, padding=1))
                if c.batch_norm:
                    layers.append(BatchNorm2d(int(v)))
                layers.append(ReLU())
                cin = int(v)
            self.features = Sequential(*layers)
            self.avgpool = AdaptiveAvgPool2d(c.pool_size)
            self.flatten = Flatten()
            self.classifier = Sequential(
                Linear(cin * c.pool_size ** 2, c.hidden), ReLU(), Dropout(c.dropout),
                Linear(c.hidden, c.hidden), ReLU(), Dropout(c.dropout),
                Linear(c.hidden, c.num_classes),
            )
        for m in self.modules():
            if isinstance(m, Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, Linear):
                init.normal_(m.weight, 0.0, 0.01)
            if isinstance(m, Conv2d | Linear) and m.bias is not None:
                init.zeros_(m.bias)

    @classmethod
    def from_torchvision(cls, path: str | os.PathLike[str], *, strict: bool = True) -> VGG:
        """A VGG with the weights of a torchvision VGG state dict (``vgg11`` ... ``vgg19_bn``)
        saved with safetensors; the layers are read from the tensor names and shapes."""
        from .checkpoints.torchvision_cnn import load_vgg_torchvision

        return load_vgg_torchvision(path, strict=strict)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of (N, C, H, W) images."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


VGG_TINY = VGGConfig(layers=(8, "M", 16, "M", 16, 16, "M"), batch_norm=True, hidden=32,
                     pool_size=2, num_classes=10)

ZOO_ENTRIES = [
    ZooEntry(
        name="vgg16",
        config=VGGConfig(),
        build=VGG,
        inputs={"x": InputSpec(("N", 3, 224, 224))},
        outputs={"output": ("N", 1000)},
        description="VGG-16 (Simonyan and Zisserman 2014), torchvision layout: 13 3x3 "
                    "convolutions in 5 stages, 25088-4096-4096-1000 classifier, 138,357,544 "
                    "parameters",
        task="image classification (ImageNet, 224x224)",
        tiny=False,
    ),
    ZooEntry(
        name="vgg_tiny",
        config=VGG_TINY,
        build=VGG,
        inputs={"x": InputSpec(("N", 3, 16, 16))},
        outputs={"output": ("N", 10)},
        description="VGG with BatchNorm: convolutions 8 | 16 | 16-16, 2x2 adaptive pooling, "
                    "64-32-32-10 classifier",
        task="image classification (16x16 images)",
    ),
]
