"""A denoising-diffusion noise predictor (book section 7.2, image generation; Ho et al. 2020).

Training draws a timestep t, noises the clean image ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``
in the data pipeline (:func:`noise_schedule` gives the cumulative a_t) and regresses the noise:
the model takes ``x_t`` and ``t`` and predicts ``eps``. The timestep enters through the
sinusoidal time embedding (computed in the graph from the int64 ``t``), an MLP, and a per-block
projection added to every residual block's feature maps. The body is a small U-Net: residual
blocks, a stride-2 downsampling convolution, a middle block, transposed-convolution upsampling
and a skip concatenation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import functional as F
from ..layers import Conv2d, ConvTranspose2d, Linear, SiLU
from ..module import Module
from ..tensor import Tensor, as_tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "DiffusionConfig", "DiffusionDenoiser", "ResBlock",
           "noise_schedule", "timestep_embedding"]


@dataclass(frozen=True)
class DiffusionConfig:
    """Image shape, the two U-Net widths, the time-embedding width and the step count."""

    in_channels: int = 1
    image_size: int = 16
    widths: tuple[int, int] = (16, 32)
    time_dim: int = 32
    num_steps: int = 1000


def noise_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
                   ) -> np.ndarray:
    """The cumulative products a_t of the linear beta schedule (float32, length num_steps)."""
    betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    return np.cumprod(1.0 - betas).astype(np.float32)


def timestep_embedding(t: Tensor, dim: int, base: float = 10_000.0,
                       dtype: Any = np.float32) -> Tensor:
    """(N,) timesteps -> (N, dim) ``[sin(t f_i), cos(t f_i)]`` with f_i = base^(-i/(dim/2)),
    in ``dtype`` (the model's float type)."""
    half = dim // 2
    freqs = np.exp(-math.log(base) * np.arange(half) / half).astype(dtype)
    angles = t.to(freqs.dtype).unsqueeze(-1) * as_tensor(freqs, freqs.dtype)
    return F.cat([angles.sin(), angles.cos()], -1)


class ResBlock(Module):
    """``x + conv2(silu(conv1(silu(x)) + time_proj(temb)))``, with a 1x1 ``skip`` convolution
    when the width changes."""

    def __init__(self, cin: int, cout: int, time_dim: int) -> None:
        super().__init__()
        self.act = SiLU()
        self.conv1 = Conv2d(cin, cout, 3, padding=1)
        self.time_proj = Linear(time_dim, cout)
        self.conv2 = Conv2d(cout, cout, 3, padding=1)
        self.skip = Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """Residual update of (N, cin, H, W) conditioned on temb (N, time_dim)."""
        h = self.conv1(self.act(x))
        h = h + self.time_proj(temb).unsqueeze(-1).unsqueeze(-1)
        h = self.conv2(self.act(h))
        return h + (x if self.skip is None else self.skip(x))


class DiffusionDenoiser(Module):
    """``forward(x, t)``: noisy images (N, C, H, W) and int64 timesteps (N,) -> predicted
    noise (N, C, H, W)."""

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DiffusionConfig()
        w0, w1 = c.widths
        td = c.time_dim
        self.time_mlp = _TimeMLP(td)
        self.conv_in = Conv2d(c.in_channels, w0, 3, padding=1)
        self.down = ResBlock(w0, w0, td)
        self.downsample = Conv2d(w0, w1, 3, stride=2, padding=1)
        self.mid = ResBlock(w1, w1, td)
        self.upsample = ConvTranspose2d(w1, w0, 2, stride=2)
        self.up = ResBlock(2 * w0, w0, td)
        self.conv_out = Conv2d(w0, c.in_channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Predict the noise in ``x`` at step ``t``."""
        dt = next(self.time_mlp.parameters()).data.dtype
        temb = self.time_mlp(timestep_embedding(t, self.config.time_dim, dtype=dt))
        h0 = self.down(self.conv_in(x), temb)
        h = self.mid(self.downsample(h0), temb)
        h = self.up(F.cat([h0, self.upsample(h)], 1), temb)
        return self.conv_out(F.silu(h))


class _TimeMLP(Module):
    """Linear, SiLU, Linear on the sinusoidal time embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, 4 * dim)
        self.act = SiLU()
        self.fc2 = Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Embed the time features."""
        return self.fc2(self.act(self.fc1(x)))


ZOO_ENTRIES = [
    ZooEntry(
        name="diffusion_denoiser",
        config=DiffusionConfig(),
        build=DiffusionDenoiser,
        inputs={"x": InputSpec(("N", 1, 16, 16)), "t": InputSpec(("N",), "int64")},
        outputs={"output": ("N", 1, 16, 16)},
        description="DDPM noise predictor: small U-Net (16-32 channels) of residual blocks "
                    "conditioned on a sinusoidal time embedding",
        task="generative modelling by denoising diffusion (noise prediction)",
        int_high={"t": 1000},
    ),
]
