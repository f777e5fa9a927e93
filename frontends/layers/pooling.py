"""Pooling layers (book section 4.4)."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..module import Module
from ..tensor import Tensor
from ._util import check_tuple, layer_error

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "GlobalAvgPool",
    "MaxPool1d",
    "MaxPool2d",
]


class _Pool(Module):
    _dims = 2

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        name, k = type(self).__name__, self._dims
        self.kernel_size = check_tuple(name, "kernel_size", kernel_size, k)
        self.stride = self.kernel_size if stride is None else check_tuple(name, "stride", stride,
                                                                          k)
        self.padding = check_tuple(name, "padding", padding, k, minimum=0)
        if any(2 * p > q for p, q in zip(self.padding, self.kernel_size, strict=True)):
            raise layer_error(name, f"padding {self.padding} must be at most half the kernel "
                              f"size {self.kernel_size}")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPool(_Pool):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding)
        self.dilation = check_tuple(type(self).__name__, "dilation", dilation, self._dims)
        self.ceil_mode = bool(ceil_mode)


class MaxPool1d(_MaxPool):
    """Max over windows of an (N, C, L) tensor; stride defaults to the kernel size."""

    _dims = 1

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.max_pool1d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)


class MaxPool2d(_MaxPool):
    """Max over windows of an (N, C, H, W) tensor; stride defaults to the kernel size."""

    _dims = 2

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)


class _AvgPool(_Pool):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)


class AvgPool1d(_AvgPool):
    """Mean over windows of an (N, C, L) tensor."""

    _dims = 1

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AvgPool2d(_AvgPool):
    """Mean over windows of an (N, C, H, W) tensor."""

    _dims = 2

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AdaptiveAvgPool1d(Module):
    """Average down to a fixed length with PyTorch's bin edges (static input length unless
    the output size is 1)."""

    def __init__(self, output_size: int) -> None:
        super().__init__()
        (self.output_size,) = check_tuple("AdaptiveAvgPool1d", "output_size", output_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.adaptive_avg_pool1d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(Module):
    """Average down to a fixed (H, W); None keeps that dim."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        sizes = (output_size, output_size) if not isinstance(output_size, tuple | list) \
            else tuple(output_size)
        if len(sizes) != 2 or any(s is not None and (not isinstance(s, int) or s < 1)
                                  for s in sizes):
            raise layer_error("AdaptiveAvgPool2d", f"output_size must be a positive int or two "
                              f"of them (or None), got {output_size!r}")
        self.output_size = sizes

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GlobalAvgPool(Module):
    """Mean over all spatial dims: (N, C, ...) -> (N, C)."""

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x``."""
        return F.global_avg_pool(x)
