"""Backend-specific runners behind ``fit``: the training step and the eval graph."""

from __future__ import annotations

from typing import Any

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.errors import InputError
from lbdl_graph.graph import Graph
from lbdl_graph.passes.train_step import TrainStep

__all__ = ["BACKENDS", "make_eval_runner", "make_step_runner"]

BACKENDS = ("numpy", "onnxruntime")


def _check(backend: str) -> None:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {BACKENDS}")


def make_step_runner(step: TrainStep, backend: str = "numpy", **options: Any) -> Any:
    """A runner with ``step(batch) -> outputs``, ``state()`` and ``set_state(state)``."""
    _check(backend)
    if backend == "numpy":
        return NumpyStepRunner(step.graph, step.info.state, step.initial_state, **options)
    from lbdl_graph.backends.onnx.stateful import OrtStatefulRunner

    return OrtStatefulRunner(step.graph, {s: f"{s}:next" for s in step.info.state},
                             init=step.initial_state, **options)


class _NumpyEval:
    def __init__(self, graph: Graph) -> None:
        self._interp = Interpreter(graph, training=False)
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = graph.output_names()

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._interp.run(inputs)


def make_eval_runner(graph: Graph, backend: str = "numpy", **options: Any) -> Any:
    """A runner with ``run(inputs) -> outputs`` for an eval graph."""
    _check(backend)
    if backend == "numpy":
        return _NumpyEval(graph)
    from lbdl_graph.backends.onnx.runner import OrtRunner

    runner = OrtRunner(graph, **options)
    runner.input_names = [v.name for v in graph.inputs]  # type: ignore[attr-defined]
    return runner
