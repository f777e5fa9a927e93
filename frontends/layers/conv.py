"""Convolution layers (book section 4.2): Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d.

Weights use PyTorch's layouts, (out, in/groups, *kernel) and for transposed convolutions
(in, out/groups, *kernel), and its default initialisation: kaiming_uniform(a=sqrt(5)) for the
weight and U(±1/sqrt(fan_in)) for the bias.
"""

from __future__ import annotations

import math
from typing import Any

from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor
from ._util import check_int, check_tuple, layer_error

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]

_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


class _ConvNd(Module):
    """Shared construction, validation and initialisation of the convolution layers."""

    _dims = 2
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", output_padding: Any = 0) -> None:
        super().__init__()
        name, k = type(self).__name__, self._dims
        self.in_channels = check_int(name, "in_channels", in_channels)
        self.out_channels = check_int(name, "out_channels", out_channels)
        self.kernel_size = check_tuple(name, "kernel_size", kernel_size, k)
        self.stride = check_tuple(name, "stride", stride, k)
        self.dilation = check_tuple(name, "dilation", dilation, k)
        self.groups = check_int(name, "groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise layer_error(name, f"groups={self.groups} must divide in_channels="
                              f"{self.in_channels} and out_channels={self.out_channels}")
        if isinstance(padding, str):
            if self._transposed or padding not in ("same", "valid"):
                raise layer_error(name, f"padding must be an int, a tuple or 'same'/'valid', got "
                                  f"{padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise layer_error(name, f"padding='same' needs stride 1, got {self.stride}")
            self.padding: Any = padding
        else:
            self.padding = check_tuple(name, "padding", padding, k, minimum=0)
        if padding_mode not in _PADDING_MODES or (self._transposed and padding_mode != "zeros"):
            raise layer_error(name, f"padding_mode {padding_mode!r} is not supported")
        if padding_mode != "zeros" and isinstance(self.padding, str):
            raise layer_error(name, f"padding_mode {padding_mode!r} needs explicit int padding")
        self.padding_mode = padding_mode
        self.output_padding = check_tuple(name, "output_padding", output_padding, k, minimum=0)
        if any(o >= max(s, d) for o, s, d in zip(self.output_padding, self.stride, self.dilation,
                                                  strict=True)):
            raise layer_error(name, f"output_padding {self.output_padding} must be smaller than "
                              f"stride {self.stride} or dilation {self.dilation}")
        if self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = Parameter(init.empty(*shape))
        if bias:
            self.bias = Parameter(init.empty(self.out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh weights from the global generator."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight.shape)
            bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
            init.uniform_(self.bias, -bound, bound)

    def _padded(self, x: Tensor) -> tuple[Tensor, Any]:
        """Pad non-zero padding modes explicitly; returns (input, padding for the conv)."""
        if self.padding_mode == "zeros":
            return x, self.padding
        amounts = [p for p in reversed(self.padding) for _ in (0, 1)]
        return F.pad(x, amounts, mode=_PADDING_MODES[self.padding_mode]), 0

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """1D convolution over (N, C_in, L) inputs."""

    _dims = 1

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x``."""
        x, padding = self._padded(x)
        return F.conv1d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)


class Conv2d(_ConvNd):
    """2D convolution over (N, C_in, H, W) inputs."""

    _dims = 2

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x``."""
        x, padding = self._padded(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)


class ConvTranspose1d(_ConvNd):
    """1D transposed convolution: output length (L-1)·s - 2p + d·(k-1) + output_padding + 1."""

    _dims = 1
    _transposed = True

    def forward(self, x: Tensor) -> Tensor:
        """Transposed-convolve ``x``."""
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class ConvTranspose2d(_ConvNd):
    """2D transposed convolution (upsampling by ``stride``)."""

    _dims = 2
    _transposed = True

    def forward(self, x: Tensor) -> Tensor:
        """Transposed-convolve ``x``."""
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
