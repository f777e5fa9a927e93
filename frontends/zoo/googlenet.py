"""GoogLeNet / Inception v1 (the seed course's glossary and chapter 7.6; Szegedy et al. 2014),
torchvision's version.

A stem (7x7/2 convolution, max pooling, 1x1 and 3x3 convolutions, max pooling) feeds nine
Inception modules (``inception3a`` ... ``inception5b``, max poolings between the stages). An
Inception module runs four branches on the same input and concatenates their channels: a 1x1
convolution (``branch1``), 1x1 then 3x3 (``branch2``), 1x1 then another 3x3 (``branch3``; the
paper has 5x5 here, torchvision a 3x3 and so do we, for its weights) and 3x3 max pooling then
1x1 (``branch4``). Every convolution is torchvision's ``BasicConv2d``: convolution without bias
(``.conv``), BatchNorm with eps 0.001 (``.bn``), ReLU. Global average pooling, dropout and ``fc``
end it. The default (1000 classes, no auxiliary heads) has exactly 6,624,904 parameters.

``aux_logits=True`` adds the two auxiliary classifiers (``aux1`` after ``inception4a``,
``aux2`` after ``inception4d``: 4x4 adaptive average pooling, ``conv``, ``fc1``, ReLU, dropout,
``fc2``); as in torchvision, they run in training mode only, where the model returns
``{"output", "aux2", "aux1"}``. ``transform_input=True`` maps images normalised with the
ImageNet mean and std to torchvision's pretrained weights' (mean 0.5, std 0.5) input scaling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    Sequential,
)
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "BasicConv2d", "GoogLeNet", "GoogLeNetConfig", "Inception",
           "InceptionAux"]

Block = tuple[int, int, int, int, int, int]
#: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection) of inception3a ... inception5b
BLOCKS: tuple[Block, ...] = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128),
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)
NAMES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


@dataclass(frozen=True)
class GoogLeNetConfig:
    """Stem widths (conv1, conv2, conv3), the nine Inception modules' branch widths, the
    auxiliary heads' widths, class count, dropouts and the two torchvision switches."""

    stem: tuple[int, int, int] = (64, 64, 192)
    blocks: tuple[Block, ...] = BLOCKS
    aux_channels: int = 128
    aux_hidden: int = 1024
    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = False
    transform_input: bool = False
    dropout: float = 0.2
    dropout_aux: float = 0.7

    def scaled(self, divisor: int) -> GoogLeNetConfig:
        """Every width divided by ``divisor`` (at least 1): a thin GoogLeNet of the same
        shape."""
        def d(v: int) -> int:
            return max(1, v // divisor)
        return replace(self, stem=(d(self.stem[0]), d(self.stem[1]), d(self.stem[2])),
                       blocks=tuple((d(a), d(b), d(c), d(e), d(f), d(g))
                                    for a, b, c, e, f, g in self.blocks),
                       aux_channels=d(self.aux_channels), aux_hidden=d(self.aux_hidden))


def out_channels(block: Block) -> int:
    """The channels an Inception module concatenates: 1x1 + 3x3 + "5x5" + pool projection."""
    return block[0] + block[2] + block[4] + block[5]


class BasicConv2d(Module):
    """Convolution without bias, BatchNorm (eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn(conv(x)))``."""
        return F.relu(self.bn(self.conv(x)))


class Inception(Module):
    """Four branches on one input, concatenated along the channels."""

    def __init__(self, cin: int, block: Block) -> None:
        super().__init__()
        c1, r3, c3, r5, c5, pool = block
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = Sequential(BasicConv2d(cin, r3, 1), BasicConv2d(r3, c3, 3, padding=1))
        self.branch3 = Sequential(BasicConv2d(cin, r5, 1), BasicConv2d(r5, c5, 3, padding=1))
        self.branch4 = Sequential(MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                  BasicConv2d(cin, pool, 1))

    def forward(self, x: Tensor) -> Tensor:
        """The four branches' maps, concatenated."""
        return F.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(Module):
    """An auxiliary classifier: 4x4 average pooling, 1x1 ``conv``, ``fc1``, ReLU, dropout,
    ``fc2``."""

    def __init__(self, cin: int, num_classes: int, channels: int, hidden: int,
                 dropout: float) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, channels, 1)
        self.flatten = Flatten()
        self.fc1 = Linear(channels * 16, hidden)
        self.dropout = Dropout(dropout)
        self.fc2 = Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Auxiliary logits (N, num_classes)."""
        x = self.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))))
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class GoogLeNet(Module):
    """torchvision's ``GoogLeNet``: stem, nine Inception modules, optional auxiliary heads,
    average pooling, dropout and ``fc``."""

    def __init__(self, config: GoogLeNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GoogLeNetConfig()
        if len(c.blocks) != 9 or any(len(b) != 6 or min(b) < 1 for b in c.blocks) \
                or min(c.stem) < 1:
            raise OpError(f"GoogLeNetConfig: need three positive stem widths and nine "
                          f"Inception modules of six positive widths; got stem={c.stem}, "
                          f"{len(c.blocks)} blocks")
        if c.transform_input and c.in_channels != 3:
            raise OpError("GoogLeNetConfig: transform_input needs in_channels=3, got "
                          f"{c.in_channels}")
        s1, s2, s3 = c.stem
        self.conv1 = BasicConv2d(c.in_channels, s1, 7, stride=2, padding=3)
        self.maxpool1 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(s1, s2, 1)
        self.conv3 = BasicConv2d(s2, s3, 3, padding=1)
        self.maxpool2 = MaxPool2d(3, stride=2, ceil_mode=True)
        widths = [s3]
        for name, block in zip(NAMES, c.blocks, strict=True):
            setattr(self, f"inception{name}", Inception(widths[-1], block))
            widths.append(out_channels(block))
            if name == "3b":
                self.maxpool3 = MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "4e":
                self.maxpool4 = MaxPool2d(2, stride=2, ceil_mode=True)
        if c.aux_logits:  # after inception4a and inception4d
            self.aux1 = InceptionAux(widths[3], c.num_classes, c.aux_channels, c.aux_hidden,
                                     c.dropout_aux)
            self.aux2 = InceptionAux(widths[6], c.num_classes, c.aux_channels, c.aux_hidden,
                                     c.dropout_aux)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.dropout = Dropout(c.dropout)
        self.fc = Linear(widths[-1], c.num_classes)

    @classmethod
    def from_torchvision(cls, path: str | os.PathLike[str], *, transform_input: bool = False,
                         strict: bool = True) -> GoogLeNet:
        """A GoogLeNet with the weights of a torchvision GoogLeNet state dict saved with
        safetensors (auxiliary heads included when the file has them); widths and class
        count are read from the tensor shapes. torchvision's pretrained ``googlenet`` weights
        expect ``transform_input=True``."""
        from .checkpoints.torchvision_cnn import load_googlenet_torchvision

        return load_googlenet_torchvision(path, transform_input=transform_input,
                                          strict=strict)

    def _transform_input(self, x: Tensor) -> Tensor:
        """ImageNet-normalised channels -> (x * std + mean - 0.5) / 0.5, per channel."""
        scale = np.array([0.229, 0.224, 0.225], np.float64) / 0.5
        shift = (np.array([0.485, 0.456, 0.406], np.float64) - 0.5) / 0.5
        return x * scale.astype(np.float32).reshape(1, 3, 1, 1) \
            + shift.astype(np.float32).reshape(1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Logits (N, num_classes); in training mode with auxiliary heads, a dict of the
        logits ``output`` and the heads' ``aux2`` and ``aux1``."""
        if self.config.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        heads = self.config.aux_logits and self.training
        aux1 = self.aux1(x) if heads else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if heads else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(self.flatten(self.avgpool(x))))
        if aux1 is not None and aux2 is not None:
            return {"output": x, "aux2": aux2, "aux1": aux1}
        return x


GOOGLENET_TINY = GoogLeNetConfig(num_classes=10).scaled(16)

ZOO_ENTRIES = [
    ZooEntry(
        name="googlenet",
        config=GoogLeNetConfig(),
        build=GoogLeNet,
        inputs={"x": InputSpec(("N", 3, 224, 224))},
        outputs={"output": ("N", 1000)},
        description="GoogLeNet / Inception v1 (Szegedy et al. 2014), torchvision layout: nine "
                    "Inception modules of BasicConv2d (conv, BatchNorm, ReLU), 6,624,904 "
                    "parameters without the auxiliary heads",
        task="image classification (ImageNet, 224x224)",
        tiny=False,
    ),
    ZooEntry(
        name="googlenet_tiny",
        config=GOOGLENET_TINY,
        build=GoogLeNet,
        inputs={"x": InputSpec(("N", 3, 64, 64))},
        outputs={"output": ("N", 10)},
        description="GoogLeNet with every width divided by 16 (stem 4-4-12, inception5b "
                    "64 channels)",
        task="image classification (64x64 images)",
    ),
]
