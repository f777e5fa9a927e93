"""The models, batches and data of the ORT-vs-torch benchmarks (no torch, no ONNX Runtime here,
so that every contender's process loads only its own library)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph.frontends import InputSpec, manual_seed
from lbdl_graph.frontends.module import Module
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import (
    SplitTrainStep,
    TrainStep,
    make_split_train_step,
    make_train_step,
)

__all__ = ["CLASSES", "IMAGE", "INFER_BATCHES", "LR", "MODELS", "TRAIN_BATCH", "Case",
           "make_case", "rel_err"]

LR = 1e-3
INFER_BATCHES = (1, 64)
MODELS = ("mlp", "lenet", "resnet_tiny", "gpt_mini")
TRAIN_BATCH = {"mlp": 64, "lenet": 64, "resnet_tiny": 32, "gpt_mini": 16}
CLASSES = {"mlp": 10, "lenet": 10, "resnet_tiny": 10, "gpt_mini": 96}
IMAGE = {"mlp": (784,), "lenet": (1, 28, 28), "resnet_tiny": (3, 32, 32)}


def rel_err(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|, tiny)."""
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


@dataclass(frozen=True)
class Case:
    """One model: its zoo name, our module, the forward input name and data generators."""

    name: str
    model: Module
    input_name: str
    input_spec: InputSpec
    target_spec: InputSpec

    def inputs(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """A batch of model inputs."""
        if self.name == "gpt_mini":
            return rng.integers(0, CLASSES[self.name], (batch, 64)).astype(np.int64)
        shape = (batch, *IMAGE[self.name])
        return rng.standard_normal(shape).astype(np.float32)

    def targets(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """A batch of class targets."""
        shape = (batch, 64) if self.name == "gpt_mini" else (batch,)
        return rng.integers(0, CLASSES[self.name], shape).astype(np.int64)

    def train_feed(self) -> dict[str, np.ndarray]:
        """The one training batch every contender steps on."""
        rng = np.random.default_rng(1)
        batch = TRAIN_BATCH[self.name]
        return {self.input_name: self.inputs(batch, rng), "y": self.targets(batch, rng)}

    def train_step(self) -> TrainStep:
        """Our compiled step: cross-entropy and Adam."""
        fwd = trace_loss(self.model, {self.input_name: self.input_spec}, self.target_spec,
                         "cross_entropy", {}, training=True)
        return make_train_step(fwd, Adam(LR))

    def split_step(self) -> SplitTrainStep:
        """The same step as a gradient graph and an update graph."""
        fwd = trace_loss(self.model, {self.input_name: self.input_spec}, self.target_spec,
                         "cross_entropy", {}, training=True)
        return make_split_train_step(fwd, Adam(LR))


def make_case(name: str) -> Case:
    """Build the zoo model ``name`` with a fixed seed (the same weights in every process)."""
    manual_seed(0)
    model = ZOO[name].model()
    if name == "gpt_mini":
        return Case(name, model, "idx", InputSpec(("N", 64), "int64"),
                    InputSpec(("N", 64), "int64"))
    shape: tuple[Any, ...] = ("N", *IMAGE[name])
    return Case(name, model, "x", InputSpec(shape), InputSpec(("N",), "int64"))
