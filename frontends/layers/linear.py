"""Linear layers and shape helpers: Linear, Identity, Flatten (book section 4.2)."""

from __future__ import annotations

import math
from typing import Any

from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, as_tensor
from ._util import check_int

__all__ = ["Flatten", "Identity", "Linear"]


class Linear(Module):
    """``y = x W^T + b`` with W of shape (out_features, in_features).

    Initialised as ``torch.nn.Linear``: W ~ kaiming_uniform(a=sqrt(5)), i.e.
    U(±1/sqrt(in_features)), and b ~ U(±1/sqrt(in_features)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features)
        self.out_features = check_int("Linear", "out_features", out_features)
        self.weight = Parameter(init.empty(self.out_features, self.in_features))
        if bias:
            self.bias = Parameter(init.empty(self.out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh weights from the global generator."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the affine map to the last dim."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. a disabled shortcut)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x``."""
        return as_tensor(x)


class Flatten(Module):
    """Merges dims ``start_dim..end_dim`` (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Flatten ``x``."""
        return as_tensor(x).flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
