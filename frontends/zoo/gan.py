"""A generative adversarial network, DCGAN style (book, "The missing bits"; Goodfellow et al.
2014, Radford et al. 2015).

The :class:`Generator` maps a latent vector through a Linear layer to a (2w, S/4, S/4) map and
two stride-2 transposed convolutions (BatchNorm and ReLU between) to an image in (-1, 1) (tanh).
The :class:`Discriminator` mirrors it with stride-2 convolutions and LeakyReLU(0.2) to one
real/fake logit per image. Training alternates: trace ``gan.discriminator`` (real and fake
batches, BCE with logits) and ``gan.generator`` followed by the discriminator with frozen
weights. :class:`GAN` bundles both; its forward gives every quantity of one step.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdl_graph.errors import OpError

from ..layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Tanh,
)
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import Unflatten
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["GAN", "ZOO_ENTRIES", "Discriminator", "GANConfig", "Generator"]


@dataclass(frozen=True)
class GANConfig:
    """Latent size, image shape (side divisible by 4) and the base width w."""

    latent_dim: int = 64
    image_size: int = 28
    channels: int = 1
    width: int = 32

    @property
    def base(self) -> int:
        """Side of the generator's first feature map."""
        return self.image_size // 4


class Generator(Module):
    """``forward(z)``: latent vectors (N, latent_dim) -> images (N, C, S, S) in (-1, 1)."""

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        w, b = c.width, c.base
        self.net = Sequential(
            Linear(c.latent_dim, 2 * w * b * b, bias=False), BatchNorm1d(2 * w * b * b), ReLU(),
            Unflatten((2 * w, b, b)),
            ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False), BatchNorm2d(w),
            ReLU(),
            ConvTranspose2d(w, c.channels, 4, stride=2, padding=1), Tanh())

    def forward(self, z: Tensor) -> Tensor:
        """Generate images."""
        return self.net(z)


class Discriminator(Module):
    """``forward(images)`` -> real/fake logits (N, 1)."""

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        w, b = c.width, c.base
        self.net = Sequential(
            Conv2d(c.channels, w, 4, stride=2, padding=1), LeakyReLU(0.2),
            Conv2d(w, 2 * w, 4, stride=2, padding=1), LeakyReLU(0.2),
            Flatten(), Linear(2 * w * b * b, 1))

    def forward(self, images: Tensor) -> Tensor:
        """Score images."""
        return self.net(images)


class GAN(Module):
    """``generator`` and ``discriminator``; ``forward(z, real)`` -> ``{"fake", "d_fake",
    "d_real"}``."""

    def __init__(self, config: GANConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GANConfig()
        if c.base < 1 or c.base * 4 != c.image_size:
            raise OpError(f"GANConfig: image size {c.image_size} must be a multiple of 4")
        self.generator = Generator(c)
        self.discriminator = Discriminator(c)

    def forward(self, z: Tensor, real: Tensor) -> dict[str, Tensor]:
        """Generate a batch and score it and a real batch."""
        fake = self.generator(z)
        return {"fake": fake, "d_fake": self.discriminator(fake),
                "d_real": self.discriminator(real)}


ZOO_ENTRIES = [
    ZooEntry(
        name="gan",
        config=GANConfig(),
        build=GAN,
        inputs={"z": InputSpec(("N", 64)), "real": InputSpec(("N", 1, 28, 28))},
        outputs={"fake": ("N", 1, 28, 28), "d_fake": ("N", 1), "d_real": ("N", 1)},
        description="DCGAN for 28x28 digits: generator Linear -> 7x7 -> transposed convs to "
                    "28x28 (tanh); discriminator stride-2 convs with LeakyReLU -> one logit",
        task="generative modelling (adversarial)",
    ),
]
