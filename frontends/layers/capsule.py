"""Capsule layers (Sabour, Frosst and Hinton 2017, "Dynamic Routing Between Capsules").

* ``PrimaryCapsules``: a convolution whose output channels are read as ``num_types`` maps of
  ``caps_dim``-dimensional vectors, one capsule per type and position, squashed.
* ``CapsuleRouting``: every input capsule ``u_i`` predicts every output capsule through its own
  matrix, ``u_hat_j|i = W_ij u_i``, and :func:`~..functional.capsule.dynamic_routing` combines
  the predictions by agreement over ``iterations`` rounds (unrolled in the graph).
"""

from __future__ import annotations

import math

from .. import init
from ..functional.capsule import dynamic_routing, squash
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, as_tensor
from ._util import check_int, layer_error
from .conv import Conv2d

__all__ = ["CapsuleRouting", "PrimaryCapsules"]


class PrimaryCapsules(Module):
    """(N, in_channels, H, W) -> (N, num_types * H' * W', caps_dim) squashed capsules, ordered
    by type, then row, then column; ``conv.weight`` is (num_types * caps_dim, in_channels, k,
    k) with the channels of one type's vector adjacent."""

    def __init__(self, in_channels: int, num_types: int, caps_dim: int, kernel_size: int,
                 stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.num_types = check_int("PrimaryCapsules", "num_types", num_types)
        self.caps_dim = check_int("PrimaryCapsules", "caps_dim", caps_dim)
        self.conv = Conv2d(in_channels, num_types * caps_dim, kernel_size, stride=stride,
                           padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        """The squashed primary capsules of a batch of feature maps."""
        y = self.conv(as_tensor(x))
        n, _, h, w = y.shape
        if not isinstance(h, int) or not isinstance(w, int):
            raise layer_error("PrimaryCapsules", f"needs static spatial dims, got {y.type}")
        caps = y.reshape(n, self.num_types, self.caps_dim, h, w).permute(0, 1, 3, 4, 2)
        return squash(caps.reshape(n, self.num_types * h * w, self.caps_dim), -1)

    def extra_repr(self) -> str:
        return f"num_types={self.num_types}, caps_dim={self.caps_dim}"


class CapsuleRouting(Module):
    """(N, in_caps, in_dim) capsules -> (N, out_caps, out_dim) capsules by routing-by-agreement.

    ``weight`` (in_caps, out_caps, out_dim, in_dim) holds the paper's ``W_ij``; it is drawn
    from U(±1/sqrt(in_dim)) (the fan-in bound of a Linear layer). No bias, as in the paper.
    """

    def __init__(self, in_caps: int, in_dim: int, out_caps: int, out_dim: int,
                 iterations: int = 3) -> None:
        super().__init__()
        name = "CapsuleRouting"
        self.in_caps = check_int(name, "in_caps", in_caps)
        self.in_dim = check_int(name, "in_dim", in_dim)
        self.out_caps = check_int(name, "out_caps", out_caps)
        self.out_dim = check_int(name, "out_dim", out_dim)
        self.iterations = check_int(name, "iterations", iterations)
        self.weight = Parameter(init.empty(in_caps, out_caps, out_dim, in_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh weights from the global generator."""
        bound = 1.0 / math.sqrt(self.in_dim)
        init.uniform_(self.weight, -bound, bound)

    def predictions(self, u: Tensor) -> Tensor:
        """``u_hat_j|i = W_ij u_i``: (N, in_caps, out_caps, out_dim), as one batched matmul
        over the input capsules."""
        x = as_tensor(u)
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.in_caps, self.in_dim):
            raise layer_error("CapsuleRouting", f"input must be (N, {self.in_caps}, "
                              f"{self.in_dim}), got {x.type}")
        n = x.shape[0]
        w = self.weight.reshape(self.in_caps, self.out_caps * self.out_dim, self.in_dim)
        pred = x.transpose(0, 1) @ w.transpose(1, 2)  # (in_caps, N, out_caps * out_dim)
        return pred.reshape(self.in_caps, n, self.out_caps, self.out_dim).permute(1, 0, 2, 3)

    def forward(self, u: Tensor) -> Tensor:
        """The output capsules; :meth:`route` also gives the coupling coefficients."""
        return self.route(u)[0]

    def route(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(v (N, out_caps, out_dim), c (N, in_caps, out_caps))`` after the last round."""
        return dynamic_routing(self.predictions(u), self.iterations)

    def extra_repr(self) -> str:
        return (f"in_caps={self.in_caps}, in_dim={self.in_dim}, out_caps={self.out_caps}, "
                f"out_dim={self.out_dim}, iterations={self.iterations}")
