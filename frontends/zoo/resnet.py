"""Residual networks (book section 5.2, figures 5.3 to 5.5; He et al. 2015).

Parameter names and layout follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``), so a torchvision state dict loads one to one; ResNet-50 has
exactly 25,557,032 parameters for 1000 classes. As in torchvision ("ResNet v1.5") a downscaling
Bottleneck puts its stride on the 3x3 convolution; ``stride_on_1x1=True`` puts it on the first
1x1 convolution as in the book's figure 5.4 and the original paper (same parameter count).
The downscaling blocks' shortcut is a 1x1 convolution with the block's stride and a BatchNorm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
    Sequential,
)
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "BasicBlock", "Bottleneck", "ResNet", "ResNetConfig", "downsample"]


@dataclass(frozen=True)
class ResNetConfig:
    """``block`` ("basic" or "bottleneck"), blocks per section ``layers``, section widths
    ``widths`` (the bottleneck width; outputs are ``expansion`` times wider), and the stem:
    "imagenet" (7x7/2 conv + 3x3/2 max pooling) or "cifar" (3x3/1 conv, no pooling)."""

    block: str = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    num_classes: int = 1000
    in_channels: int = 3
    stem: str = "imagenet"
    stem_width: int = 64
    stride_on_1x1: bool = False


def conv3x3(cin: int, cout: int, stride: int = 1) -> Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> Conv2d:
    """1x1 convolution, no bias."""
    return Conv2d(cin, cout, 1, stride=stride, bias=False)


def downsample(cin: int, cout: int, stride: int) -> Sequential:
    """The shortcut of a block that changes the shape: 1x1 convolution with the block's stride,
    then BatchNorm (book figure 5.4)."""
    return Sequential(conv1x1(cin, cout, stride), BatchNorm2d(cout))


class BasicBlock(Module):
    """Two 3x3 conv-BN layers wrapped in a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, stride_on_1x1: bool = False
                 ) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv3x3(cin, width, stride)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = conv3x3(width, cout)
        self.bn2 = BatchNorm2d(cout)
        self.downsample = downsample(cin, cout, stride) if stride != 1 or cin != cout \
            else None

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class Bottleneck(Module):
    """1x1 (reduce) -> 3x3 -> 1x1 (expand x4) conv-BN layers in a residual connection (book
    figure 5.3; with a stride or a width change, the downscaling block of figure 5.4)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, stride_on_1x1: bool = False
                 ) -> None:
        super().__init__()
        cout = width * self.expansion
        s1, s3 = (stride, 1) if stride_on_1x1 else (1, stride)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = BatchNorm2d(cout)
        self.downsample = downsample(cin, cout, stride) if stride != 1 or cin != cout \
            else None

    def forward(self, x: Tensor) -> Tensor:
        """The three conv-BN layers (ReLU between) plus the shortcut, then ReLU."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class ResNet(Module):
    """Stem, four (or ``len(layers)``) sections of residual blocks, each but the first opening
    with a stride-2 downscaling block, global average pooling and the ``fc`` classifier."""

    def __init__(self, config: ResNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ResNetConfig()
        if c.block not in ("basic", "bottleneck") or c.stem not in ("imagenet", "cifar"):
            raise OpError(f"ResNetConfig: unknown block {c.block!r} or stem {c.stem!r}")
        if len(c.layers) != len(c.widths):
            raise OpError("ResNetConfig: layers and widths must have the same length")
        block = BasicBlock if c.block == "basic" else Bottleneck
        if c.stem == "imagenet":
            self.conv1 = Conv2d(c.in_channels, c.stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: Module = MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(c.in_channels, c.stem_width)
            self.maxpool = Identity()
        self.bn1 = BatchNorm2d(c.stem_width)
        cin = c.stem_width
        for i, (n, width) in enumerate(zip(c.layers, c.widths, strict=True)):
            blocks: list[Module] = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(cin, width, stride, c.stride_on_1x1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", Sequential(*blocks))
        self.avgpool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.fc = Linear(cin, c.num_classes)
        self.num_features = cin

    @classmethod
    def from_torchvision(cls, path: str | os.PathLike[str], *, stride_on_1x1: bool = False,
                         strict: bool = True) -> ResNet:
        """A ResNet with the weights of a torchvision ResNet state dict saved with
        safetensors; the architecture is read from the tensor shapes."""
        from .checkpoints.torchvision import load_resnet_torchvision

        return load_resnet_torchvision(path, stride_on_1x1=stride_on_1x1, strict=strict)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of (N, C, H, W) images."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(len(self.config.layers)):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


RESNET18 = ResNetConfig(block="basic", layers=(2, 2, 2, 2))
RESNET50 = ResNetConfig()
RESNET_TINY = ResNetConfig(block="basic", layers=(1, 1, 1), widths=(8, 16, 32),
                           num_classes=10, stem="cifar", stem_width=8)

ZOO_ENTRIES = [
    ZooEntry(
        name="resnet18",
        config=RESNET18,
        build=ResNet,
        inputs={"x": InputSpec(("N", 3, 224, 224))},
        outputs={"output": ("N", 1000)},
        description="ResNet-18: BasicBlocks (2, 2, 2, 2), torchvision layout, 11,689,512 "
                    "parameters",
        task="image classification (ImageNet, 224x224)",
        tiny=False,
    ),
    ZooEntry(
        name="resnet50",
        config=RESNET50,
        build=ResNet,
        inputs={"x": InputSpec(("N", 3, 224, 224))},
        outputs={"output": ("N", 1000)},
        description="ResNet-50 (book figure 5.5): Bottlenecks (3, 4, 6, 3), torchvision "
                    "layout, 25,557,032 parameters",
        task="image classification (ImageNet, 224x224)",
        tiny=False,
    ),
    ZooEntry(
        name="resnet_tiny",
        config=RESNET_TINY,
        build=ResNet,
        inputs={"x": InputSpec(("N", 3, 32, 32))},
        outputs={"output": ("N", 10)},
        description="CIFAR-style ResNet: 3x3 stem, BasicBlocks (1, 1, 1) of widths 8-16-32",
        task="image classification (CIFAR-10, 32x32)",
    ),
    ZooEntry(
        name="resnet_tiny_bottleneck",
        config=ResNetConfig(layers=(1, 1), widths=(4, 8), num_classes=10, stem="cifar",
                            stem_width=8),
        build=ResNet,
        inputs={"x": InputSpec(("N", 3, 16, 16))},
        outputs={"output": ("N", 10)},
        description="tiny Bottleneck ResNet: sections (1, 1) of widths 4-8 (outputs 16-32)",
        task="image classification (16x16 images)",
    ),
]
