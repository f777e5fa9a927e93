"""Dropout layers (book section 4.5): active in training mode only, where each call draws its
own mask from the trace's ``rng_key`` input."""

from __future__ import annotations

from .. import functional as F
from ..module import Module
from ..tensor import Tensor
from ._util import check_prob

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]


class _Dropout(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_prob(type(self).__name__, "p", p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(_Dropout):
    """Zero each entry with probability ``p`` and scale the rest by ``1/(1-p)``."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply dropout (identity in eval mode)."""
        return F.dropout(x, self.p, self.training)


class Dropout1d(_Dropout):
    """Zero whole channels of (N, C, L) inputs."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply channel dropout (identity in eval mode)."""
        return F.dropout1d(x, self.p, self.training)


class Dropout2d(_Dropout):
    """Zero whole channels of (N, C, H, W) inputs (book figure 4.8)."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply channel dropout (identity in eval mode)."""
        return F.dropout2d(x, self.p, self.training)
