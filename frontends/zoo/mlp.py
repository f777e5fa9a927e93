"""Multi-layer perceptrons (book section 5.1, figure 5.1): fully connected layers separated by
activations. The default is the classic 784-256-256-10 MNIST classifier."""

from __future__ import annotations

from dataclasses import dataclass

from ..layers import Flatten
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import mlp_stack
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["MLP", "ZOO_ENTRIES", "MLPConfig"]


@dataclass(frozen=True)
class MLPConfig:
    """Layer widths: ``in_features``, then ``hidden``, then ``out_features``."""

    in_features: int = 784
    hidden: tuple[int, ...] = (256, 256)
    out_features: int = 10
    activation: str = "relu"
    dropout: float = 0.0

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every layer width, input to output."""
        return (self.in_features, *self.hidden, self.out_features)


class MLP(Module):
    """``Linear -> act -> ... -> Linear``; inputs of any shape (N, ...) are flattened first."""

    def __init__(self, config: MLPConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MLPConfig()
        self.flatten = Flatten()
        self.layers = mlp_stack(config.sizes, config.activation, config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, out_features)."""
        return self.layers(self.flatten(x))


ZOO_ENTRIES = [
    ZooEntry(
        name="mlp",
        config=MLPConfig(),
        build=MLP,
        inputs={"x": InputSpec(("N", 784))},
        outputs={"output": ("N", 10)},
        description="MLP 784-256-256-10 with ReLU (book figure 5.1 scaled to MNIST)",
        task="image classification (flattened 28x28 digits)",
    ),
    ZooEntry(
        name="mlp_tiny",
        config=MLPConfig(in_features=12, hidden=(16, 8), out_features=3),
        build=MLP,
        inputs={"x": InputSpec(("N", 12))},
        outputs={"output": ("N", 3)},
        description="MLP 12-16-8-3 with ReLU",
        task="classification of feature vectors",
    ),
]
