"""Shared builders for the adapter tests: tiny GPT graphs, batches and a short training run."""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.frontends import functional as F
from lbdl_graph.frontends.trace import InputSpec, trace
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_train_step

VOCAB = 32  # gpt_tiny
SPEC = InputSpec(("N", "T"), "int64")


def gpt(name: str = "gpt_tiny", seed: int = 0) -> tuple[Any, Graph, Graph]:
    """A zoo GPT (deterministic weights), its logits graph and its loss graph."""
    from lbdl_graph.frontends import init

    init.manual_seed(seed)
    entry = ZOO[name]
    model = entry.model()
    vocab = entry.config.vocab_size

    def loss_fn(idx: Any, y: Any) -> dict[str, Any]:
        logits = model(idx)
        return {"loss": F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))}

    logits = entry.trace(model)
    loss = trace(loss_fn, {"idx": SPEC, "y": SPEC}, module=model, training=False,
                 name=f"{name}_loss")
    return model, logits, loss


def batch(seed: int = 0, n: int = 4, t: int = 8, vocab: int = VOCAB) -> dict[str, np.ndarray]:
    """A next-token batch: ``y`` is ``idx`` shifted by one (a learnable pattern)."""
    idx = np.random.default_rng(seed).integers(0, vocab, (n, t))
    return {"idx": idx, "y": np.roll(idx, -1, axis=1)}


def train(graph: Graph, steps: int = 12, lr: float = 1e-2
          ) -> tuple[Graph, list[float], tuple[str, ...]]:
    """Train ``graph``'s trainable parameters on one batch with Adam; returns the graph with the
    trained values, the losses and the trained parameter names."""
    step = make_train_step(graph, Adam(lr))
    runner = NumpyStepRunner(step.graph, step.info.state, step.initial_state)
    data = batch()
    losses = [float(runner.step(data)["loss"]) for _ in range(steps)]
    state = runner.state()
    return graph.with_params({p: state[p] for p in step.info.params}), losses, step.info.params
