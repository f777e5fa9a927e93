"""``qat_finetune``: prepare, fine-tune and convert a model with quantisation-aware training.

The graph transform end to end: :func:`.qat.prepare_qat` on an inference graph, a loss on top
of its output (cross-entropy or MSE written with IR ops, unless the graph already has a
``loss``), :func:`~lbdl_graph.passes.train_step.make_train_step`, a few epochs of mini-batches
on a step runner the caller supplies (passes do not depend on a backend:
``lambda step: NumpyStepRunner(step.graph, step.info.state, step.initial_state)``), the trained
weights put back into the prepared graph and :func:`.qat.convert_qat`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import InputError, OpError
from lbdl_graph.graph import Graph

from ..optim import Adam, Optimizer
from ..train_step import TrainStep, make_train_step
from .calibrate import Batches, Evaluate
from .qat import convert_qat, prepare_qat

__all__ = ["LOSSES", "QatResult", "RunnerFactory", "StepRunner", "add_loss", "qat_finetune"]

LOSSES = ("cross_entropy", "mse")


class StepRunner(Protocol):
    """What ``qat_finetune`` needs of a runner (``NumpyStepRunner``, ``OrtStatefulRunner``)."""

    def step(self, batch: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
        """Run one step on a batch; returns the loss and metrics."""
        ...

    def state(self) -> Mapping[str, np.ndarray]:
        """The current state: trained parameters by name among it."""
        ...


RunnerFactory = Callable[[TrainStep], StepRunner]


@dataclass(frozen=True)
class QatResult:
    """The prepared (fake-quantised) graph with the trained weights, the converted quantised
    graph, the loss of every step and the counts of both passes."""

    prepared: Graph
    converted: Graph
    losses: list[float] = field(default_factory=list)
    stats: Mapping[str, int] = field(default_factory=dict)


def add_loss(graph: Graph, loss: str = "cross_entropy", *, output: str | None = None,
             target: str = "y") -> Graph:
    """``graph`` with one output ``loss``: the mean cross-entropy of the logits ``output``
    (default: the first output; classes on the last axis) against int64 class indices, or the
    mean squared error against a float target of the output's shape; ``target`` is a new
    input."""
    if loss not in LOSSES:
        raise OpError(f"unknown loss {loss!r}; use one of {LOSSES}")
    out = graph.outputs[0] if output is None else next(
        (v for v in graph.outputs if v.name == output), None)
    if out is None:
        raise InputError(f"graph '{graph.name}' has no output '{output}'; outputs: "
                         f"{graph.output_names()}")
    if target in {v.name for v in graph.iter_values()}:
        raise InputError(f"graph '{graph.name}' already has a value '{target}'; pass another "
                         "target name")
    b = GraphBuilder.from_graph(graph)
    with b, b.scope("loss"), b.provenance(origin=f"add_loss:{loss}"):
        if loss == "cross_entropy":
            y = b.input(target, "int64", out.shape[:-1])
            logp = ops.log_softmax(out, axis=-1)
            picked = ops.gather_elements(logp, ops.unsqueeze(y, axes=(-1,)), axis=-1)
            value = ops.neg(ops.reduce_mean(picked, axes=None, keepdims=False))
        else:
            y = b.input(target, out.dtype, out.shape)
            diff = ops.sub(out, y)
            value = ops.reduce_mean(ops.mul(diff, diff), axes=None, keepdims=False)
    return b.build({"loss": value}, prune=True)


def _batches(data: Mapping[str, np.ndarray], names: Sequence[str], batch_size: int,
             rng: np.random.Generator | None) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(data.values())))
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [{k: data[k][order[i:i + batch_size]] for k in names}
            for i in range(0, n, batch_size)]


def qat_finetune(graph: Graph, data: Mapping[str, np.ndarray], *, make_runner: RunnerFactory,
                 bits: int = 8, weight_scheme: str = "per_channel_symmetric",
                 kinds: Sequence[str] | None = None, activations: bool = False,
                 activation_type: str = "uint8", evaluate: Evaluate | None = None,
                 calibration_data: Batches | None = None,
                 optimizer: Optimizer | None = None, epochs: int = 1, batch_size: int = 64,
                 seed: int = 0, loss: str = "cross_entropy", output: str | None = None,
                 target: str = "y", accuracy_level: int = 0) -> QatResult:
    """Quantisation-aware fine-tuning of ``graph`` (an inference graph, or one with a scalar
    ``loss`` output) on ``data`` (its inputs and ``target``, arrays of equal length).

    ``bits``, ``weight_scheme``, ``kinds``, ``activations`` and ``activation_type`` go to
    :func:`.qat.prepare_qat`;
    activation ranges are calibrated on ``calibration_data`` (default: the first 8 batches of
    ``data``) with ``evaluate``. Training runs ``epochs`` shuffled epochs (``seed``) with
    ``optimizer`` (default Adam(1e-4): a fine-tune) on the runner ``make_runner(step)``.
    """
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"data arrays differ in length: {lengths}")
    inputs = [v.name for v in graph.inputs]
    missing = sorted(set(inputs) - set(data))
    if missing:
        raise InputError(f"data lacks the graph input(s) {missing}; got {sorted(data)}")
    if activations and calibration_data is None:
        calibration_data = _batches(data, inputs, batch_size, None)[:8]
    prep = prepare_qat(graph, bits=bits, weight_scheme=weight_scheme, kinds=kinds,
                       activations=activations, activation_type=activation_type,
                       calibration_data=calibration_data, evaluate=evaluate)
    if not prep.changed:
        raise OpError(f"graph '{graph.name}' has no matmul / linear / conv weight to quantise")
    trainable = prep.graph
    if "loss" not in trainable.output_names():
        trainable = add_loss(trainable, loss, output=output, target=target)
    step = make_train_step(trainable, optimizer or Adam(1e-4), seed=seed)
    absent = sorted(set(step.info.batch) - set(data))
    if absent:
        raise InputError(f"data lacks the training input(s) {absent}; got {sorted(data)}")
    runner = make_runner(step)
    losses: list[float] = []
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        for batch in _batches(data, step.info.batch, batch_size, rng):
            losses.append(float(runner.step(batch)[step.info.loss]))
    state = runner.state()
    trained = prep.graph.with_params({p: np.asarray(state[p]) for p in step.info.params
                                      if p in prep.graph.param_map})
    conv = convert_qat(trained, accuracy_level=accuracy_level)
    stats = {**prep.stats, "steps": len(losses)}
    return QatResult(trained, conv.graph, losses, stats)
