"""LeNet-like convolutional classifiers (book section 5.2, figure 5.2).

* ``lenet``: the book's figure 5.2 model on 1x28x28 digits: conv 5x5 (32) -> maxpool 3 -> ReLU
  -> conv 5x5 (64) -> maxpool 2 -> ReLU -> 256 features -> fc 200 -> ReLU -> fc 10.
* ``lenet5``: LeCun et al. (1998)'s LeNet-5 on 28x28 inputs padded by 2 (the original's 32x32):
  conv 5x5 (6) -> avgpool 2 -> tanh -> conv 5x5 (16) -> avgpool 2 -> tanh -> 120 -> 84 -> 10.
* ``lenet_digits``: the ``lenet`` network for scikit-learn's 8x8 digits. We chose to
  **upsample inside the graph**: nearest-neighbour x3 (24x24) then zero padding by 2 gives 28x28
  with the digit in a centred 24x24 box, as MNIST centres its digits in a 20x20 box of 28x28. So
  the model has exactly ``lenet``'s weights and an MNIST-trained LeNet runs on digits unchanged;
  the data pipeline only scales the 0..16 pixel values to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import AvgPool2d, Conv2d, Flatten, MaxPool2d, Sequential
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import activation, mlp_stack
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "LeNet", "LeNetConfig", "upsample_nearest"]


@dataclass(frozen=True)
class LeNetConfig:
    """Convolution stages (``channels[i]`` maps with ``kernel_size`` kernels, then pooling by
    ``pools[i]`` and the activation), then an MLP through ``hidden`` to ``num_classes``.

    ``upsample`` (nearest neighbour) and ``pad_input`` (zeros) resize the input inside the
    graph before the first convolution.
    """

    in_channels: int = 1
    image_size: int = 28
    channels: tuple[int, ...] = (32, 64)
    kernel_size: int = 5
    conv_padding: int = 0
    pools: tuple[int, ...] = (3, 2)
    pool: str = "max"
    activation: str = "relu"
    hidden: tuple[int, ...] = (200,)
    num_classes: int = 10
    upsample: int = 1
    pad_input: int = 0

    def feature_size(self) -> int:
        """Side length of the last feature map (the formula the layers follow)."""
        s = self.image_size * self.upsample + 2 * self.pad_input
        for p in self.pools:
            s = s + 2 * self.conv_padding - self.kernel_size + 1  # stride-1 convolution
            s = (s - p) // p + 1  # pooling with stride = kernel
        return s

    def flat_features(self) -> int:
        """Length of the flattened feature vector entering the MLP."""
        return self.channels[-1] * self.feature_size() ** 2


def upsample_nearest(x: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upsampling of (N, C, H, W) by an integer factor (reshape + expand, so
    N may be symbolic)."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    y = x.reshape(n, c, h, 1, w, 1).expand(-1, -1, -1, factor, -1, factor)
    return y.reshape(n, c, h * factor, w * factor)


class LeNet(Module):
    """A LeNet-like convnet: ``features`` (conv/pool/activation stages), ``flatten`` and the
    ``classifier`` MLP."""

    def __init__(self, config: LeNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or LeNetConfig()
        if len(c.channels) != len(c.pools):
            raise OpError(f"LeNetConfig: {len(c.channels)} conv stages but {len(c.pools)} pools")
        if c.pool not in ("max", "avg") or c.feature_size() < 1:
            raise OpError(f"LeNetConfig: invalid pooling {c.pool!r} or a feature map below 1x1")
        stages: list[Module] = []
        width = c.in_channels
        for ch, p in zip(c.channels, c.pools, strict=True):
            stages.append(Conv2d(width, ch, c.kernel_size, padding=c.conv_padding))
            stages.append(MaxPool2d(p) if c.pool == "max" else AvgPool2d(p))
            stages.append(activation(c.activation))
            width = ch
        self.features = Sequential(*stages)
        self.flatten = Flatten()
        self.classifier = mlp_stack((c.flat_features(), *c.hidden, c.num_classes), c.activation)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of (N, C, H, W) images."""
        c = self.config
        x = upsample_nearest(x, c.upsample)
        if c.pad_input:
            x = F.pad(x, [c.pad_input] * 4)
        return self.classifier(self.flatten(self.features(x)))


_LENET5 = LeNetConfig(channels=(6, 16), conv_padding=0, pools=(2, 2), pool="avg",
                      activation="tanh", hidden=(120, 84), pad_input=2)

ZOO_ENTRIES = [
    ZooEntry(
        name="lenet",
        config=LeNetConfig(),
        build=LeNet,
        inputs={"x": InputSpec(("N", 1, 28, 28))},
        outputs={"output": ("N", 10)},
        description="book figure 5.2 LeNet-like convnet: 2 conv+maxpool stages, 256 features, "
                    "MLP 256-200-10",
        task="image classification (MNIST 28x28 digits)",
    ),
    ZooEntry(
        name="lenet5",
        config=_LENET5,
        build=LeNet,
        inputs={"x": InputSpec(("N", 1, 28, 28))},
        outputs={"output": ("N", 10)},
        description="LeNet-5 (LeCun et al. 1998): tanh, average pooling, 28x28 padded to 32x32",
        task="image classification (MNIST 28x28 digits)",
    ),
    ZooEntry(
        name="lenet_digits",
        config=LeNetConfig(image_size=8, upsample=3, pad_input=2),
        build=LeNet,
        inputs={"x": InputSpec(("N", 1, 8, 8))},
        outputs={"output": ("N", 10)},
        description="the lenet network on scikit-learn's 8x8 digits, upsampled x3 and padded "
                    "by 2 to 28x28 inside the graph",
        task="image classification (scikit-learn digits, pixels scaled to [0, 1])",
    ),
]
