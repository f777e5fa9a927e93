"""AlexNet (a larger LeNet, book section 5.2; the seed course's chapter 7.6; Krizhevsky et al.
2012), torchvision's single-tower version.

Five convolutions (11x11 stride 4, 5x5, then three 3x3) with ReLU and three 3x3 stride-2 max
poolings form ``features``; an adaptive average pooling to 6x6 and the ``classifier``
(Dropout, 9216-4096, ReLU, Dropout, 4096-4096, ReLU, 4096-classes) follow. Names and layouts
are torchvision's (``features.0``, ``features.3``, ..., ``classifier.1``, ``classifier.4``,
``classifier.6``), so a torchvision state dict loads as is; the default has exactly 61,100,840
parameters. ``widths``, ``hidden`` and ``pool_size`` shrink it for tests and the digits
example; the input must be at least 63x63 (three poolings after the stride-4 stem).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from lbdl_graph.errors import OpError

from ..layers import (
    AdaptiveAvgPool2d,
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

__all__ = ["ZOO_ENTRIES", "AlexNet", "AlexNetConfig", "alexnet_parameters"]


@dataclass(frozen=True)
class AlexNetConfig:
    """The five convolution widths, the classifier's hidden width, the adaptive pooling size,
    the dropout probability and the class count."""

    widths: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256)
    hidden: int = 4096
    pool_size: int = 6
    num_classes: int = 1000
    in_channels: int = 3
    dropout: float = 0.5


def alexnet_parameters(c: AlexNetConfig) -> int:
    """The parameter count of ``c`` (weights and biases), without building the model."""
    chans = (c.in_channels, *c.widths)
    kernels = (11, 5, 3, 3, 3)
    convs = sum(a * b * k * k + b
                for (a, b), k in zip(itertools.pairwise(chans), kernels, strict=True))
    flat = c.widths[-1] * c.pool_size ** 2
    return convs + flat * c.hidden + c.hidden + c.hidden * c.hidden + c.hidden \
        + c.hidden * c.num_classes + c.num_classes


class AlexNet(Module):
    """``features`` (convolutions, ReLU, max pooling), ``avgpool``, ``flatten`` and the
    ``classifier`` MLP, as torchvision's ``AlexNet``."""

    def __init__(self, config: AlexNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AlexNetConfig()
        if len(c.widths) != 5 or min(c.widths) < 1 or c.hidden < 1 or c.pool_size < 1:
            raise OpError(f"AlexNetConfig: need five positive widths, a positive hidden width "
                          f"and pool size; got widths={c.widths}, hidden={c.hidden}, "
                          f"pool_size={c.pool_size}")
        w1, w2, w3, w4, w5 = c.widths
        self.features = Sequential(
            Conv2d(c.in_channels, w1, 11, stride=4, padding=2), ReLU(), MaxPool2d(3, stride=2),
            Conv2d(w1, w2, 5, padding=2), ReLU(), MaxPool2d(3, stride=2),
            Conv2d(w2, w3, 3, padding=1), ReLU(),
            Conv2d(w3, w4, 3, padding=1), ReLU(),
            Conv2d(w4, w5, 3, padding=1), ReLU(), MaxPool2d(3, stride=2),
        )
        self.avgpool = AdaptiveAvgPool2d(c.pool_size)
        self.flatten = Flatten()
        self.classifier = Sequential(
            Dropout(c.dropout), Linear(w5 * c.pool_size ** 2, c.hidden), ReLU(),
            Dropout(c.dropout), Linear(c.hidden, c.hidden), ReLU(),
            Linear(c.hidden, c.num_classes),
        )

    @classmethod
    def from_torchvision(cls, path: str | os.PathLike[str], *, strict: bool = True
                         ) -> AlexNet:
        """An AlexNet with the weights of a torchvision AlexNet state dict saved with
        safetensors; widths and class count are read from the tensor shapes."""
        from .checkpoints.torchvision_cnn import load_alexnet_torchvision

        return load_alexnet_torchvision(path, strict=strict)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of (N, C, H, W) images, H and W at least 63."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


ALEXNET = AlexNetConfig()
ALEXNET_TINY = AlexNetConfig(widths=(8, 16, 24, 16, 16), hidden=32, pool_size=2,
                             num_classes=10)

ZOO_ENTRIES = [
    ZooEntry(
        name="alexnet",
        config=ALEXNET,
        build=AlexNet,
        inputs={"x": InputSpec(("N", 3, 224, 224))},
        outputs={"output": ("N", 1000)},
        description="AlexNet (Krizhevsky et al. 2012), torchvision layout: five convolutions, "
                    "three max poolings, 9216-4096-4096-1000 classifier, 61,100,840 parameters",
        task="image classification (ImageNet, 224x224)",
        tiny=False,
    ),
    ZooEntry(
        name="alexnet_tiny",
        config=ALEXNET_TINY,
        build=AlexNet,
        inputs={"x": InputSpec(("N", 3, 64, 64))},
        outputs={"output": ("N", 10)},
        description="AlexNet of widths 8-16-24-16-16, 2x2 adaptive pooling, 64-32-32-10 "
                    "classifier",
        task="image classification (64x64 images)",
    ),
]
