"""The zoo's registry entry: how to build one configuration of a model and feed it.

A :class:`ZooEntry` names a model configuration, holds its config dataclass and constructor,
the example input specs (symbolic batch dim ``"N"``, sequence length ``"T"`` where the model
allows it), the expected output shapes, a description and the task. :meth:`ZooEntry.trace`
builds the model and traces it; :meth:`ZooEntry.example_inputs` draws concrete arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lbdl_graph.dtypes import dtype
from lbdl_graph.graph import Graph
from lbdl_graph.shapes import Dim

from ..module import Module
from ..trace import InputSpec, trace

__all__ = ["DEFAULT_DIMS", "Sampler", "ZooEntry", "concrete_shape"]

#: The sizes :meth:`ZooEntry.example_inputs` gives the symbolic dims unless told otherwise.
DEFAULT_DIMS: dict[str, int] = {"N": 2, "T": 8, "S": 6}

#: A custom input generator: ``sampler(dims, rng) -> {input name: array}``.
Sampler = Callable[[Mapping[str, int], np.random.Generator], dict[str, np.ndarray]]


def concrete_shape(shape: tuple[Dim, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    """``shape`` with every symbolic dim replaced by its size in ``dims``."""
    return tuple(d if isinstance(d, int) else int(dims[d]) for d in shape)


@dataclass(frozen=True)
class ZooEntry:
    """One model configuration of the zoo.

    Attributes:
        name: the registry key (``"resnet50"``).
        config: the config dataclass instance.
        build: ``build(config) -> Module`` (usually the model class itself).
        inputs: the forward arguments by name, as :class:`~lbdl_graph.frontends.InputSpec`.
        outputs: the expected output shapes by graph output name (symbolic dims allowed).
        description: one line on the architecture.
        task: what it is trained for (``"image classification"``).
        tiny: small enough to run on NumPy in the tests: the tiny configurations and the book
            models that are cheap anyway (the 784-256-256-10 MLP, LeNet, Nature DQN, the Cora
            GCN). False for the big book models (ResNet-18/50, Transformer base, GPT-2 small,
            ViT-B/16, the MNIST CapsNet), which the tests only construct and trace.
        int_high: exclusive upper bound of the values of integer inputs (token ids, classes).
        sampler: draws the inputs instead of the default (standard normal floats, uniform
            integers below ``int_high``), e.g. a normalised adjacency matrix.
    """

    name: str
    config: Any
    build: Callable[[Any], Module]
    inputs: dict[str, InputSpec]
    outputs: dict[str, tuple[Dim, ...]]
    description: str
    task: str
    tiny: bool = True
    int_high: dict[str, int] = field(default_factory=dict)
    sampler: Sampler | None = None

    def model(self) -> Module:
        """A freshly initialised model of this configuration."""
        return self.build(self.config)

    def trace(self, model: Module | None = None, *, training: bool = False) -> Graph:
        """Trace ``model`` (default: a new one) on the example input specs; evaluation mode
        unless ``training``."""
        m = self.model() if model is None else model
        return trace(m, dict(self.inputs), name=self.name, training=training)

    def example_inputs(self, dims: Mapping[str, int] | None = None, seed: int = 0
                       ) -> dict[str, np.ndarray]:
        """Concrete inputs for the symbolic dims ``dims`` (default :data:`DEFAULT_DIMS`)."""
        sizes = {**DEFAULT_DIMS, **(dims or {})}
        rng = np.random.default_rng(seed)
        if self.sampler is not None:
            return self.sampler(sizes, rng)
        out: dict[str, np.ndarray] = {}
        for name, spec in self.inputs.items():
            shape = concrete_shape(spec.shape, sizes)
            dt = dtype(spec.dtype)
            if dt.is_integer:
                out[name] = rng.integers(0, self.int_high.get(name, 2), size=shape,
                                         dtype=dt.numpy)
            else:
                out[name] = rng.standard_normal(shape).astype(dt.numpy)
        return out

    def output_shapes(self, dims: Mapping[str, int] | None = None
                      ) -> dict[str, tuple[int, ...]]:
        """The expected concrete output shapes for ``dims``."""
        sizes = {**DEFAULT_DIMS, **(dims or {})}
        return {k: concrete_shape(v, sizes) for k, v in self.outputs.items()}
