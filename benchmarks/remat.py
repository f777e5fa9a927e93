"""Rematerialisation on a deep MLP training step: activation memory against step time.

Builds a ``--layers``-deep tanh MLP (``--width`` units, optional dropout) with an MSE loss,
compiles the SGD training step, and runs it on the NumPy interpreter without and with
``rematerialize`` (policy ``--policy``). Reports, for batch ``--batch``:

- ``memory_ratio``: peak activation memory without / with remat (bytes of live forward
  activations and their recomputed copies, from liveness in node order, ``passes/cost.py``);
- ``time_ratio``: best train-step time with / without remat (same process, interleaved runs,
  BLAS limited to ``--threads`` threads so that a shared machine disturbs less; medians too);
- the peak of every intermediate value (gradients included), the extra FLOPs, and the peak
  that ``tracemalloc`` measures for one step (NumPy reports its buffers to it; kernel
  temporaries included, inputs and parameters excluded).

Goal: memory_ratio >= 2.5 with time_ratio <= 1.4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from lbdl_graph import Graph, GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.passes.optim import SGD
from lbdl_graph.passes.remat import remat_report, rematerialize
from lbdl_graph.passes.train_step import make_train_step


def build_mlp(layers: int, width: int, dropout: float, seed: int = 0) -> Graph:
    """A ``layers``-deep tanh MLP (scopes ``layers.<i>``) with an MSE loss."""
    rng = np.random.default_rng(seed)
    with GraphBuilder("mlp") as b:
        x = b.input("x", "f32", ("N", width))
        y = b.input("y", "f32", ("N", width))
        key = b.input("rng_key", "i64", (2,)) if dropout else None
        if key is not None:
            b.metadata["rng_input"] = "rng_key"
        h = x
        for i in range(layers):
            with b.scope(f"layers.{i}"):
                w = b.param(f"layers.{i}.weight",
                            (rng.standard_normal((width, width)) / np.sqrt(width))
                            .astype(np.float32))
                bias = b.param(f"layers.{i}.bias", np.zeros(width, np.float32))
                h = ops.tanh(ops.add(ops.matmul(h, w), bias))
                if key is not None:
                    h = ops.dropout(h, key, ratio=dropout, salt=i)
        d = ops.sub(h, y)
        loss = ops.reduce_mean(ops.mul(d, d), axes=None, keepdims=False)
        return b.build({"loss": loss})


def measured_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes that tracemalloc sees during ``fn()`` above what was held before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def blas_threads(n: int) -> AbstractContextManager[Any]:
    """Limit BLAS to ``n`` threads (0: library default) when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=n, user_api="blas") if n else nullcontext()


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--policy", choices=("sqrt", "every_k"), default="sqrt")
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (0: default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    ts = make_train_step(build_mlp(args.layers, args.width, args.dropout), SGD(lr=0.01))
    bindings = {"N": args.batch}
    res = rematerialize(ts.graph, policy=args.policy, k=args.k, bindings=bindings)
    report = remat_report(ts.graph, res.graph, bindings)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((args.batch, args.width)).astype(np.float32),
             "y": rng.standard_normal((args.batch, args.width)).astype(np.float32),
             **ts.initial_state}
    plain, remat = Interpreter(ts.graph), Interpreter(res.graph)
    want, got = plain.run(feeds), remat.run(feeds)
    identical = all(np.array_equal(want[k], got[k]) for k in want)
    times: dict[str, list[float]] = {"plain": [], "remat": []}
    with blas_threads(args.threads):
        for _ in range(args.repeat):  # interleaved, so that drifts hit both alike
            for name, interp in (("plain", plain), ("remat", remat)):
                t0 = time.perf_counter()
                interp.run(feeds)
                times[name].append(time.perf_counter() - t0)
    t_plain, t_remat = (min(times[k]) for k in ("plain", "remat"))
    med_plain, med_remat = (statistics.median(times[k]) for k in ("plain", "remat"))
    traced_plain = measured_peak(lambda: plain.run(feeds))
    traced_remat = measured_peak(lambda: remat.run(feeds))
    result = {
        "layers": args.layers, "width": args.width, "batch": args.batch,
        "dropout": args.dropout, "policy": args.policy, "threads": args.threads,
        "nodes": len(ts.graph.nodes),
        "recomputed_nodes": res.stats.get("recomputed_nodes", 0),
        "checkpoints": res.stats.get("checkpoints", 0),
        "activation_peak_bytes": report.activation_peak_before,
        "activation_peak_bytes_remat": report.activation_peak_after,
        "memory_ratio": report.memory_ratio,
        "peak_bytes": report.peak_bytes_before,
        "peak_bytes_remat": report.peak_bytes_after,
        "traced_peak_bytes": traced_plain,
        "traced_peak_bytes_remat": traced_remat,
        "flops": report.flops_before,
        "extra_flops": report.extra_flops,
        "flops_ratio": report.flops_ratio,
        "step_s": t_plain,
        "step_s_remat": t_remat,
        "time_ratio": t_remat / t_plain,
        "median_step_s": med_plain,
        "median_step_s_remat": med_remat,
        "median_time_ratio": med_remat / med_plain,
        "bit_identical": identical,
    }
    if args.json:
        print(json.dumps(result))
        return
    mib = 2.0**20
    print(f"{args.layers}-layer MLP, width {args.width}, batch {args.batch}, dropout "
          f"{args.dropout}: {result['nodes']} nodes, {result['recomputed_nodes']} recomputed "
          f"from {result['checkpoints']} checkpoints ({args.policy})")
    print(f"peak activations   {report.activation_peak_before / mib:8.2f} MiB -> "
          f"{report.activation_peak_after / mib:8.2f} MiB  ({report.memory_ratio:.2f}x less, "
          "goal >= 2.5x)")
    print(f"peak intermediates {report.peak_bytes_before / mib:8.2f} MiB -> "
          f"{report.peak_bytes_after / mib:8.2f} MiB  (gradients included)")
    print(f"tracemalloc peak   {traced_plain / mib:8.2f} MiB -> {traced_remat / mib:8.2f} MiB")
    print(f"train step         {t_plain * 1e3:8.2f} ms  -> {t_remat * 1e3:8.2f} ms   "
          f"({result['time_ratio']:.2f}x best, {result['median_time_ratio']:.2f}x median; "
          f"goal <= 1.4x; FLOPs {report.flops_ratio:.2f}x)")
    print(f"outputs bit-identical: {identical}")


if __name__ == "__main__":
    main()
