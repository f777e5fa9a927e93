"""Training-step speed on the NumPy backend against a hand-written NumPy implementation.

MLP 784-256-256-10, batch 64, Adam: our compiled step (forward, loss, backward and the Adam
update, one graph, run by the NumPy interpreter) vs the same math written by hand with NumPy
(benchmarks/_handwritten.py), in the same process. Goal: ratio <= 1.2. Also reports the step
times of LeNet (batch 64) and GPT-mini (vocab 96, context 64, 4 layers, d 128, 4 heads, batch
16) on our NumPy backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _handwritten import NumpyMLPAdam

from lbdl_graph.frontends import InputSpec, manual_seed, nn
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_train_step


def timeit(fn: Any, repeat: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def compiled_step(model: nn.Module, inputs: dict[str, InputSpec], target: InputSpec,
                  backend: str = "numpy") -> Any:
    """A runner for the model's compiled Adam training step (cross-entropy loss)."""
    fwd = trace_loss(model, inputs, target, "cross_entropy", {}, training=True)
    step = make_train_step(fwd, Adam(1e-3))
    return make_step_runner(step, backend), step


def mlp_figures(repeat: int) -> dict[str, float]:
    """Our MLP step vs the hand-written NumPy step."""
    manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    runner, _ = compiled_step(model, {"x": InputSpec(("N", 784))}, InputSpec(("N",), "i64"))
    sd = model.state_dict()
    hand = NumpyMLPAdam([(sd[f"{i}.weight"], sd[f"{i}.bias"]) for i in (0, 2, 4)])
    ours_first = float(runner.step({"x": x, "y": y})["loss"])
    hand_first = hand.step(x, y)
    assert abs(ours_first - hand_first) < 1e-4, (ours_first, hand_first)
    t_ours = timeit(lambda: runner.step({"x": x, "y": y}), repeat)
    t_hand = timeit(lambda: hand.step(x, y), repeat)
    return {"mlp_step_ms": t_ours * 1e3, "mlp_handwritten_ms": t_hand * 1e3,
            "mlp_ratio_vs_numpy": t_ours / t_hand}


def zoo_figures(repeat: int) -> dict[str, float]:
    """LeNet and GPT-mini step times on the NumPy backend (zoo models)."""
    from lbdl_graph.frontends import zoo

    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    manual_seed(0)
    lenet = zoo.ZOO["lenet"].model()
    if lenet is not None:
        runner, _ = compiled_step(lenet, {"x": InputSpec(("N", 1, 28, 28))},
                                  InputSpec(("N",), "i64"))
        x = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 64)
        out["lenet_step_ms"] = timeit(lambda: runner.step({"x": x, "y": y}), repeat) * 1e3
        gpt = zoo.ZOO["gpt_mini"].model()
        runner, _ = compiled_step(gpt, {"x": InputSpec(("N", 64), "i64")},
                                  InputSpec(("N", 64), "i64"))
        t = rng.integers(0, 96, (16, 64))
        out["gpt_mini_step_ms"] = timeit(lambda: runner.step({"x": t, "y": t}),
                                         max(3, repeat // 5)) * 1e3
    return out


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = mlp_figures(args.repeat)
    res.update(zoo_figures(args.repeat))
    if args.json:
        print(json.dumps(res))
        return
    print(f"MLP 784-256-256-10, batch 64, Adam: ours {res['mlp_step_ms']:.2f} ms, hand-written "
          f"NumPy {res['mlp_handwritten_ms']:.2f} ms, ratio {res['mlp_ratio_vs_numpy']:.2f} "
          "(goal <= 1.2)")
    for k in ("lenet_step_ms", "gpt_mini_step_ms"):
        if k in res:
            print(f"{k}: {res[k]:.2f}")


if __name__ == "__main__":
    main()
