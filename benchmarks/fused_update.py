"""How far to fuse optimizer updates over a flat buffer: ORT train-step time per threshold.

``python benchmarks/fused_update.py [--models mlp,lenet,resnet_tiny] [--below 0,4096,...]``
builds each model's train step (as ``ort_backend.py``: cross-entropy, Adam) once per
``fuse_below`` threshold (parameters with fewer elements share one flat update; 0: every
parameter has its own chain), checks that all of them give bit-identical losses and state after
``--check-steps`` steps on ONNX Runtime, then times them in interleaved rounds in one process
(same library, same thread count): median, min and spread per threshold, the ratio to
threshold 0, and the update's node count. With one thread ORT computes in the calling thread,
so the median thread CPU time per step (``cpu_ms``) is also given: on a loaded machine it
excludes the time the step was preempted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
from _cases import make_case

from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_train_step

NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def measure(name: str, belows: list[int], threads: int, repeat: int, check: int
            ) -> dict[str, Any]:
    """Figures of one model."""
    case = make_case(name)
    feed = case.train_feed()
    fwd = trace_loss(case.model, {case.input_name: case.input_spec}, case.target_spec,
                     "cross_entropy", {}, training=True)
    opts = {"providers": "cpu", "intra_op_threads": threads, "session_options": NO_SPIN}
    runners, nodes = {}, {}
    for below in belows:
        step = make_train_step(fwd, Adam(1e-3), fuse_below=below)
        nodes[below] = sum(1 for n in step.graph.nodes if n.origin.startswith("optim"))
        runners[below] = make_step_runner(step, "onnxruntime", **opts)
    ref = None
    for below, r in runners.items():
        losses = [float(r.step(feed)["loss"]) for _ in range(check)]
        got = (losses, r.state())
        if ref is None:
            ref = got
        elif got[0] != ref[0] or any(not np.array_equal(v, ref[1][k]) for k, v in got[1].items()):
            raise AssertionError(f"{name}: fuse_below={below} is not bit-identical to "
                                 f"fuse_below={belows[0]}")
    times: dict[int, list[float]] = {b: [] for b in belows}
    cpu: dict[int, list[float]] = {b: [] for b in belows}
    for i in range(repeat):
        order = belows[i % len(belows):] + belows[:i % len(belows)]
        for below in order:
            t0, c0 = time.perf_counter(), time.thread_time()
            runners[below].step(feed)
            cpu[below].append(time.thread_time() - c0)
            times[below].append(time.perf_counter() - t0)
    out: dict[str, Any] = {}
    base = float(np.median(times[belows[0]]))
    base_cpu = float(np.median(cpu[belows[0]]))
    for below, v in times.items():
        q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
        c = float(np.median(cpu[below]))
        out[f"{name}_below{below}"] = {"ms": med * 1e3, "min_ms": float(np.min(v)) * 1e3,
                                       "spread": (q3 - q1) / med, "speedup": base / med,
                                       "cpu_ms": c * 1e3, "cpu_speedup": base_cpu / c,
                                       "optimizer_nodes": nodes[below]}
    return out


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet,resnet_tiny")
    parser.add_argument("--below", default="0,1024,4096,16384,65536,1073741824")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--check-steps", type=int, default=3)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    belows = [int(b) for b in args.below.split(",")]
    res: dict[str, Any] = {"threads": args.threads, "loadavg_start": list(os.getloadavg())}
    with threadpool_limits(args.threads):
        for name in args.models.split(","):
            res.update(measure(name, belows, args.threads, args.repeat, args.check_steps))
    res["loadavg_end"] = list(os.getloadavg())
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
