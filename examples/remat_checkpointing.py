"""Rematerialisation (gradient checkpointing): train a deep MLP with less activation memory and
exactly the same numbers.

A 24-layer tanh MLP (width 128, dropout 0.1, written inline in the DSL) learns to imitate a
fixed random "teacher" network of the same shape (a synthetic regression, MSE loss). Its
compiled training step (forward, backward, Adam) is rewritten by ``passes.remat.rematerialize``
with the sqrt(n) policy: only the outputs of about sqrt(24) layers stay alive for the backward
pass, the others are recomputed from the nearest checkpoint right before they are needed
(dropout masks too: they are a hash of key, salt and element index). The script prints the
liveness-based peak activation memory and FLOPs before and after, measures the peak that
``tracemalloc`` sees during one NumPy step of each, then trains both steps from the same state
on the same batches on the NumPy interpreter and checks that every loss and every final weight
is bit-identical. The trained network's inference graph is exported to ONNX and ONNX Runtime
is checked against NumPy.

    python examples/remat_checkpointing.py        # 100 steps per variant (about 15 s)
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from _common import check_onnx, parse_args, stage

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.frontends import Module, Tensor, manual_seed, nn, trace
from lbdl_graph.frontends.training import compile_training
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.remat import rematerialize

DEPTH, WIDTH, BATCH = 24, 128, 1024


class DeepMLP(Module):
    """``DEPTH`` blocks of Linear, tanh and dropout (scopes ``layers.<i>``: remat's layers)."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Dropout(dropout))
            for _ in range(DEPTH))
        self.head = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def traced_peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (as tracemalloc sees NumPy's buffers) while ``fn`` runs."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def main() -> None:
    args = parse_args(__doc__, backend="numpy", extra={"steps": (int, 100, "training steps")})
    steps = 2 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    manual_seed(args.seed + 1)
    teacher = trace(DeepMLP(dropout=0.0), {"x": ("N", WIDTH)}, training=False)
    x = rng.standard_normal((steps * BATCH, WIDTH)).astype(np.float32)
    y = Interpreter(teacher, training=False).run({"x": x})["output"]
    y = (y - y.mean(0)) / y.std(0)  # unit-variance targets: predicting their mean scores 1
    manual_seed(args.seed)
    model = DeepMLP()
    step, _ = compile_training(model, x[:BATCH], y[:BATCH], loss="mse", optimizer=Adam(3e-4),
                               seed=args.seed)
    result = rematerialize(step.graph, policy="sqrt", bindings={"N": BATCH})
    remat = result.graph
    print(f"training step: {len(step.graph.nodes)} nodes, {model.num_parameters():,} parameters"
          f"; batch {BATCH}")
    print(result.report)

    feeds = {"x": x[:BATCH], "y": y[:BATCH], **step.initial_state}
    plain_run, remat_run = Interpreter(step.graph), Interpreter(remat)
    mib = 2.0**20
    peaks = [traced_peak(lambda i=i: i.run(feeds)) / mib for i in (plain_run, remat_run)]
    print(f"tracemalloc peak of one NumPy step: {peaks[0]:.1f} MiB -> {peaks[1]:.1f} MiB "
          f"({peaks[0] / peaks[1]:.2f}x less)")

    losses: dict[str, list[float]] = {}
    states = {}
    for name, graph in (("plain", step.graph), ("remat", remat)):
        runner = NumpyStepRunner(graph, step.info.state, step.initial_state)
        with stage(f"training the {name} step on numpy: {steps} steps of {BATCH}"):
            t0 = time.perf_counter()
            losses[name] = [float(runner.step({"x": x[i:i + BATCH], "y": y[i:i + BATCH]})["loss"])
                            for i in range(0, steps * BATCH, BATCH)]
            per_step = (time.perf_counter() - t0) / steps
        states[name] = runner.state()
        print(f"  MSE {losses[name][0]:.4f} -> {losses[name][-1]:.4f} (predicting the mean: "
              f"1.0), {per_step * 1e3:.0f} ms per step")
    same_loss = losses["plain"] == losses["remat"]
    same_weights = all(np.array_equal(states["plain"][k], states["remat"][k])
                       for k in states["plain"])
    print(f"remat vs plain: losses bit-identical {same_loss}, final weights and Adam moments "
          f"bit-identical {same_weights}")
    if not (same_loss and same_weights):
        raise SystemExit(1)

    model.load_state_dict({k: states["remat"].get(k, v) for k, v in model.state_dict().items()})
    graph = trace(model, {"x": ("N", WIDTH)}, training=False)
    check_onnx(graph, {"x": x[:BATCH]}, args.out, "remat_checkpointing")


if __name__ == "__main__":
    main()
