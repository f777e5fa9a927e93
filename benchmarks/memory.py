"""Memory planning on the NumPy backend: planned vs measured peak, in-place execution on and off.

Three workloads: a chain of big elementwise ops (x: f32[256,1024], 1 MiB per value), and the
Adam training steps of the MLP 784-256-256-10 and of LeNet (batch 64) compiled as in
benchmarks/train_step.py. For each: the planned peak (``Interpreter.memory_report``) with and
without in-place writes, the node where it is reached, the nodes planned to run in place and
those that did (a profiled run), the tracemalloc peak of one run (NumPy's allocations are traced;
inputs and parameters are allocated before tracing starts) with in-place on and off, and the
median run time of interleaved runs with in-place on and off, in the same process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import compiled_step

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.frontends import InputSpec, manual_seed, nn
from lbdl_graph.graph import Graph

Case = tuple[Graph, dict[str, Any], dict[str, int]]


def chain_case() -> Case:
    """exp, then 8 times y = tanh((y + x) * y), on f32[256,1024]."""
    with GraphBuilder("chain") as b:
        x = b.input("x", "f32", ("N", 1024))
        y = ops.exp(x)
        for _ in range(8):
            y = ops.tanh(ops.mul(ops.add(y, x), y))
        graph = b.build([y])
    feed = {"x": np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)}
    return graph, feed, {"N": 256}


def step_case(model: nn.Module, shape: tuple[int, ...]) -> Case:
    """The model's compiled Adam step, fed a batch of 64 and the initial state."""
    _, step = compiled_step(model, {"x": InputSpec(("N", *shape))}, InputSpec(("N",), "i64"))
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(64, *shape)).astype(np.float32),
            "y": rng.integers(0, 10, 64), **step.initial_state}
    return step.graph, feed, {"N": 64}


def cases() -> dict[str, Callable[[], Case]]:
    """The workloads by name (built lazily)."""
    from lbdl_graph.frontends import zoo

    def mlp() -> Case:
        manual_seed(0)
        return step_case(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                                       nn.ReLU(), nn.Linear(256, 10)), (784,))

    def lenet() -> Case:
        manual_seed(0)
        return step_case(zoo.ZOO["lenet"].model(), (1, 28, 28))

    return {"elementwise_chain": chain_case, "mlp_adam_step": mlp, "lenet_adam_step": lenet}


def traced_peak(interp: Interpreter, feed: dict[str, Any]) -> int:
    """Peak bytes traced by tracemalloc during one run (after a warm-up run)."""
    interp.run(feed)
    tracemalloc.start()
    try:
        interp.run(feed)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(graph: Graph, feed: dict[str, Any], bindings: dict[str, int],
            repeat: int) -> dict[str, Any]:
    """The figures of one workload."""
    on, off = Interpreter(graph, inplace=True), Interpreter(graph, inplace=False)
    res_on, res_off = on.run(feed), off.run(feed)
    identical = all(np.array_equal(res_on[k], res_off[k]) for k in res_off)
    prof = Interpreter(graph, profile=True)
    prof.run(feed)
    out: dict[str, Any] = dict(on.memory_report(bindings).as_dict())
    out["inplace_ran"] = sum(p.inplace for p in prof.last_profile)
    out["bit_identical"] = identical
    out["measured_peak"] = traced_peak(on, feed)
    out["measured_peak_no_inplace"] = traced_peak(off, feed)
    out["planned_over_measured"] = out["planned_peak"] / out["measured_peak"]
    times: dict[bool, list[float]] = {True: [], False: []}
    for interp in (on, off):
        interp.run(feed)
    for _ in range(repeat):  # interleaved, so that drift hits both alike
        for flag, interp in ((True, on), (False, off)):
            t0 = time.perf_counter()
            interp.run(feed)
            times[flag].append(time.perf_counter() - t0)
    out["ms_inplace"] = float(np.median(times[True])) * 1e3
    out["ms_no_inplace"] = float(np.median(times[False])) * 1e3
    return out


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--only", choices=sorted(cases()), action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = {name: measure(*make(), args.repeat) for name, make in cases().items()
           if not args.only or name in args.only}
    if args.json:
        print(json.dumps(res))
        return
    mib = 1 / 2**20
    for name, r in res.items():
        print(f"{name}: planned peak {r['planned_peak'] * mib:.2f} MiB "
              f"(no in-place {r['planned_peak_no_inplace'] * mib:.2f}, at {r['peak_node']}), "
              f"measured {r['measured_peak'] * mib:.2f} MiB "
              f"(no in-place {r['measured_peak_no_inplace'] * mib:.2f}); "
              f"in place {r['inplace_ran']}/{r['inplace_nodes']} planned nodes; "
              f"time {r['ms_inplace']:.2f} ms (no in-place {r['ms_no_inplace']:.2f}); "
              f"bit-identical {r['bit_identical']}")


if __name__ == "__main__":
    main()
