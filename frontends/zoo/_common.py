"""Small pieces the zoo's model families share: activation lookup, MLP stacks, Unflatten,
in-graph Gaussian noise and parameter counts.

Like the layer library, this module is not marked as user code: the nodes its helpers create
carry the line of the zoo model that called them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from lbdl_graph import ops
from lbdl_graph.errors import OpError

from ..context import current_state
from ..layers import (
    GELU,
    Dropout,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    SiLU,
    Tanh,
)
from ..module import Module
from ..tensor import Tensor

__all__ = [
    "ACTIVATIONS",
    "Unflatten",
    "activation",
    "count_parameters",
    "mlp_stack",
    "randn_like",
]

#: Activation names accepted by the zoo configs.
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "tanh", "silu", "leaky_relu")


def activation(name: str) -> Module:
    """The activation layer called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name == "relu":
        return ReLU()
    if name == "gelu":
        return GELU()
    if name == "gelu_tanh":
        return GELU(approximate="tanh")
    if name == "tanh":
        return Tanh()
    if name == "silu":
        return SiLU()
    if name == "leaky_relu":
        return LeakyReLU(0.2)
    raise OpError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def mlp_stack(sizes: Sequence[int], act: str = "relu", dropout: float = 0.0,
              final_activation: bool = False) -> Sequential:
    """``Linear, act, [Dropout], Linear, ...`` through ``sizes`` (no activation after the last
    Linear unless ``final_activation``)."""
    if len(sizes) < 2:
        raise OpError(f"an MLP needs at least two sizes, got {tuple(sizes)}")
    layers: list[Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation(act))
            if dropout > 0.0:
                layers.append(Dropout(dropout))
    return Sequential(*layers)


def count_parameters(model: Module) -> int:
    """Number of parameter elements, each shared (tied) parameter counted once."""
    return model.num_parameters()


def randn_like(x: Tensor) -> Tensor:
    """Standard normal noise of ``x``'s shape and dtype, drawn in the graph from the trace's
    ``rng_key`` input with a fresh salt (bit-identical on NumPy and ONNX Runtime)."""
    st = current_state()
    return Tensor(ops.random_normal(x.value, st.rng_key(), salt=st.next_salt(), dtype=x.dtype))


class Unflatten(Module):
    """(N, prod(shape)) -> (N, *shape), N possibly symbolic (the inverse of Flatten)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x: Tensor) -> Tensor:
        """Reshape the feature dim."""
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
