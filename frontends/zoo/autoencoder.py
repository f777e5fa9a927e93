"""Autoencoders (book section 6.1, image denoising, and "The missing bits"): MLP and
convolutional autoencoders, the denoising variant and a variational autoencoder.

An autoencoder maps the input to a low-dimensional latent code (``encoder``) and back
(``decoder``); outputs go through a sigmoid, for images scaled to [0, 1].

**Denoising.** A :class:`Autoencoder` with ``noise_std > 0`` corrupts its input *in the graph*
in training mode: ``x + noise_std * random_normal(x)``, drawn from the trace's ``rng_key`` input
(one fresh salt per trace), so the training graph takes clean images plus the key and the loss
compares the output with the clean input (the book's MSE). In evaluation mode no noise is added.
A data pipeline that corrupts images itself (masking, blur, JPEG...) uses ``noise_std=0`` and
feeds the degraded images; both give the same graph interface.

**VAE.** :class:`VAE` returns ``recon`` (logits), ``mu`` and ``logvar``; in training mode
``z = mu + exp(logvar / 2) * eps`` with eps from ``random_normal`` (the reparameterisation
trick), in evaluation mode ``z = mu``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import Conv2d, ConvTranspose2d, Flatten, Linear, ReLU, Sequential, Sigmoid
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import Unflatten, mlp_stack, randn_like
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["VAE", "ZOO_ENTRIES", "Autoencoder", "AutoencoderConfig", "VAEConfig", "vae_loss"]


@dataclass(frozen=True)
class AutoencoderConfig:
    """``kind`` "mlp" (widths ``hidden`` down to ``latent_dim``, mirrored back) or "conv"
    (3x3 stride-2 convolutions of widths ``channels``, a Linear to the latent code, mirrored
    with transposed convolutions); ``noise_std > 0`` makes it a denoising autoencoder."""

    kind: str = "conv"
    in_channels: int = 1
    image_size: int = 28
    channels: tuple[int, ...] = (16, 32)
    hidden: tuple[int, ...] = (256,)
    latent_dim: int = 32
    noise_std: float = 0.0

    @property
    def in_features(self) -> int:
        """Pixels per image (the MLP's input width)."""
        return self.in_channels * self.image_size**2


class Autoencoder(Module):
    """``forward(x)``: images (N, C, H, W) -> reconstructions of the same shape in (0, 1)."""

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AutoencoderConfig()
        if c.kind == "mlp":
            self.encoder = Sequential(Flatten(),
                                      *mlp_stack((c.in_features, *c.hidden, c.latent_dim)))
            self.decoder = Sequential(
                *mlp_stack((c.latent_dim, *reversed(c.hidden), c.in_features)),
                Unflatten((c.in_channels, c.image_size, c.image_size)))
        elif c.kind == "conv":
            self.encoder, self.decoder = self._conv_stacks(c)
        else:
            raise OpError(f"AutoencoderConfig: kind must be 'mlp' or 'conv', got {c.kind!r}")
        self.out = Sigmoid()

    @staticmethod
    def _conv_stacks(c: AutoencoderConfig) -> tuple[Sequential, Sequential]:
        side = c.image_size // 2 ** len(c.channels)
        if side * 2 ** len(c.channels) != c.image_size:
            raise OpError(f"AutoencoderConfig: image size {c.image_size} is not divisible by "
                          f"2^{len(c.channels)}")
        widths = (c.in_channels, *c.channels)
        enc: list[Module] = []
        for a, b in itertools.pairwise(widths):
            enc += [Conv2d(a, b, 3, stride=2, padding=1), ReLU()]
        flat = c.channels[-1] * side * side
        enc += [Flatten(), Linear(flat, c.latent_dim)]
        dec: list[Module] = [Linear(c.latent_dim, flat), ReLU(),
                             Unflatten((c.channels[-1], side, side))]
        back = widths[::-1]
        for i, (a, b) in enumerate(itertools.pairwise(back)):
            dec.append(ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1))
            if i < len(back) - 2:
                dec.append(ReLU())
        return Sequential(*enc), Sequential(*dec)

    def corrupt(self, x: Tensor) -> Tensor:
        """The denoising corruption: Gaussian noise in training mode (identity otherwise)."""
        if not self.training or self.config.noise_std <= 0.0:
            return x
        return x + randn_like(x) * self.config.noise_std

    def decode(self, z: Tensor) -> Tensor:
        """Latent codes (N, latent_dim) -> images (N, C, H, W) in (0, 1)."""
        return self.out(self.decoder(z))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x`` (corrupted first when denoising in training mode)."""
        return self.decode(self.encoder(self.corrupt(x)))


@dataclass(frozen=True)
class VAEConfig:
    """An MLP VAE: ``in_features`` -> ``hidden`` -> (mu, logvar) of ``latent_dim``, mirrored."""

    in_features: int = 784
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20


class VAE(Module):
    """``forward(x)`` on flat inputs (N, in_features) -> ``{"recon", "mu", "logvar"}``; recon
    are logits (use binary cross-entropy with logits plus the KL term)."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VAEConfig()
        self.encoder = mlp_stack((c.in_features, *c.hidden), final_activation=True)
        self.mu = Linear(c.hidden[-1], c.latent_dim)
        self.logvar = Linear(c.hidden[-1], c.latent_dim)
        self.decoder = mlp_stack((c.latent_dim, *reversed(c.hidden), c.in_features))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Encode, sample (training) or take the mean (evaluation), decode."""
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + (logvar * 0.5).exp() * randn_like(mu) if self.training else mu
        return {"recon": self.decoder(z), "mu": mu, "logvar": logvar}


def vae_loss(recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """The negative ELBO averaged over the batch: binary cross-entropy of the reconstruction
    summed over features, plus the KL divergence of N(mu, exp(logvar)) to N(0, I)."""
    rec = F.binary_cross_entropy_with_logits(recon, target, reduction="none").sum(1)
    kl = ((mu * mu + logvar.exp() - logvar - 1.0) * 0.5).sum(1)
    return (rec + kl).mean()


ZOO_ENTRIES = [
    ZooEntry(
        name="autoencoder_mlp",
        config=AutoencoderConfig(kind="mlp", hidden=(256,), latent_dim=32),
        build=Autoencoder,
        inputs={"x": InputSpec(("N", 1, 28, 28))},
        outputs={"output": ("N", 1, 28, 28)},
        description="MLP autoencoder 784-256-32-256-784, sigmoid output",
        task="dimensionality reduction / reconstruction (MNIST)",
    ),
    ZooEntry(
        name="autoencoder_conv",
        config=AutoencoderConfig(kind="conv", channels=(16, 32), latent_dim=32),
        build=Autoencoder,
        inputs={"x": InputSpec(("N", 1, 28, 28))},
        outputs={"output": ("N", 1, 28, 28)},
        description="convolutional autoencoder: 3x3/2 convs 16-32, latent 32, transposed "
                    "convs back to 28x28, sigmoid output",
        task="dimensionality reduction / reconstruction (MNIST)",
    ),
    ZooEntry(
        name="denoising_autoencoder",
        config=AutoencoderConfig(kind="conv", image_size=16, channels=(8, 16), latent_dim=16,
                                 noise_std=0.3),
        build=Autoencoder,
        inputs={"x": InputSpec(("N", 1, 16, 16))},
        outputs={"output": ("N", 1, 16, 16)},
        description="denoising conv autoencoder: Gaussian noise (std 0.3) added in the graph "
                    "from rng_key in training mode, clean input in evaluation mode",
        task="image denoising (book section 6.1)",
    ),
    ZooEntry(
        name="vae",
        config=VAEConfig(in_features=64, hidden=(32,), latent_dim=4),
        build=VAE,
        inputs={"x": InputSpec(("N", 64))},
        outputs={"recon": ("N", 64), "mu": ("N", 4), "logvar": ("N", 4)},
        description="MLP variational autoencoder 64-32-(4, 4)-32-64 with the "
                    "reparameterisation trick",
        task="generative modelling (8x8 digits, flattened)",
    ),
]
