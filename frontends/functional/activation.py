"""Activation functions and softmax (book section 4.3)."""

from __future__ import annotations

from typing import Any

from lbdl_graph import ops
from lbdl_graph.errors import OpError

from ..tensor import Tensor, error
from ._util import float_tensor

__all__ = [
    "gelu",
    "leaky_relu",
    "log_softmax",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]


def relu(x: Any) -> Tensor:
    """``max(x, 0)``."""
    return Tensor(ops.relu(float_tensor(x, "relu").value))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """``x`` if positive else ``negative_slope * x``."""
    return Tensor(ops.leaky_relu(float_tensor(x, "leaky_relu").value, alpha=negative_slope))


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """``x·Φ(x)``; ``approximate='tanh'`` uses the tanh formula."""
    if approximate not in ("none", "tanh"):
        raise error(OpError, f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Tensor(ops.gelu(float_tensor(x, "gelu").value, approximate=approximate))


def tanh(x: Any) -> Tensor:
    """Hyperbolic tangent."""
    return Tensor(ops.tanh(float_tensor(x, "tanh").value))


def sigmoid(x: Any) -> Tensor:
    """Logistic sigmoid ``1 / (1 + e^-x)``."""
    return Tensor(ops.sigmoid(float_tensor(x, "sigmoid").value))


def silu(x: Any) -> Tensor:
    """``x · sigmoid(x)`` (swish)."""
    t = float_tensor(x, "silu")
    return t * Tensor(ops.sigmoid(t.value))


def softplus(x: Any) -> Tensor:
    """``log(1 + e^x)``."""
    return Tensor(ops.softplus(float_tensor(x, "softplus").value))


def softmax(x: Any, dim: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``."""
    return Tensor(ops.softmax(float_tensor(x, "softmax").value, axis=dim))


def log_softmax(x: Any, dim: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``."""
    return Tensor(ops.log_softmax(float_tensor(x, "log_softmax").value, axis=dim))
