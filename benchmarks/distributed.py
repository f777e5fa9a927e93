"""Data-parallel training cost on this machine: ``mpiexec -n 2 python benchmarks/distributed.py``.

GPT-mini (vocab 96, context 64, 4 layers, d 128, 4 heads; Adam) with a per-rank batch of
``--batch`` sequences of 64 tokens, on the NumPy backend (``--backend onnxruntime`` for ORT),
one thread per rank. Reported (rank 0, ``--json`` for one JSON line):

- ``step_ms``: median wall time of one data-parallel step (gradient graph, all-reduce, update);
- ``allreduce_ms``: median time of the step spent in the gradient all-reduce (waiting for the
  other ranks included), ``allreduce_share`` = allreduce_ms / step_ms (goal <= 0.10 at 2 ranks);
- ``allreduce_alone_ms``: the same all-reduce after a barrier (transfer only, no waiting);
- ``bytes_per_step``: bytes each rank all-reduces per step (gradients + the loss);
- ``scaling_efficiency``: weak scaling, ``single_step_ms / step_ms``: the fused single-process
  step on the same per-rank batch, timed on rank 0 while the other ranks idle, in rounds
  interleaved with the data-parallel steps so load from other processes hits both alike
  (1.0 = N ranks process N times the samples per second of one);
- ``step_ms_overlap``, ``allreduce_wait_ms_overlap``, ``overlap_speedup`` (NumPy): the step
  with 1 MiB buckets each all-reduced as soon as the backward pass has produced it, MPI polled
  every 16 nodes meanwhile, and the time still spent waiting for the all-reduces once the
  backward pass is done; speedup = step_ms / step_ms_overlap (> 1: overlapping pays);
- ``parity_max_rel``: ||a - b|| / ||b|| of the parameters after ``--parity-steps`` steps of N ranks
  with per-rank batch B/N against one process with batch B (and ``parity_elementwise_max_rel``,
  max |a - b| / max |b| over the tensors, for SGD and Adam).
"""

from __future__ import annotations

import os

THREADS = os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", THREADS)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from lbdl_graph.frontends import InputSpec, manual_seed, zoo  # noqa: E402
from lbdl_graph.frontends.training.data_parallel import DataParallelRunner  # noqa: E402
from lbdl_graph.frontends.training.distributed import Communicator  # noqa: E402
from lbdl_graph.frontends.training.runners import make_step_runner  # noqa: E402
from lbdl_graph.frontends.training.trainer import trace_loss  # noqa: E402
from lbdl_graph.passes.optim import SGD, Adam  # noqa: E402
from lbdl_graph.passes.train_step import make_split_train_step, make_train_step  # noqa: E402

T = 64


def gpt_forward(t: int = T) -> Any:
    """GPT-mini followed by its cross-entropy loss, traced for training."""
    manual_seed(0)
    model = zoo.ZOO["gpt_mini"].model()
    return trace_loss(model, {"x": InputSpec(("N", t), "i64")}, InputSpec(("N", t), "i64"),
                      "cross_entropy", {}, training=True)


def tokens(rng: np.random.Generator, n: int, t: int = T) -> dict[str, np.ndarray]:
    """A batch of next-token pairs."""
    seq = rng.integers(0, 96, (n, t + 1))
    return {"x": seq[:, :-1], "y": seq[:, 1:]}


def _options(backend: str) -> dict[str, Any]:
    return {"intra_op_threads": int(THREADS)} if backend == "onnxruntime" else {}


def timing(comm: Communicator, backend: str, batch: int, repeat: int) -> dict[str, float]:
    """Step, all-reduce and single-process step times (rank 0's medians); with NumPy also the
    step with 1 MiB buckets whose all-reduces overlap the backward pass (``*_overlap``)."""
    fwd = gpt_forward()
    opts = _options(backend)
    split = make_split_train_step(fwd, Adam())
    runners = {"": DataParallelRunner(split, comm, backend, **opts)}
    if backend == "numpy":
        runners["_overlap"] = DataParallelRunner(split, comm, backend, bucket_bytes=1 << 20,
                                                 overlap=True)
    single = make_step_runner(make_train_step(fwd, Adam()), backend, **opts) \
        if comm.rank == 0 else None
    data = tokens(np.random.default_rng(comm.rank), batch)
    times: dict[str, list[float]] = {}

    def record(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    for i in range(repeat + 2):  # two warm-up rounds, dropped below
        comm.barrier()
        if single is not None:
            t0 = time.perf_counter()
            single.step(data)
            record("single_step_ms", time.perf_counter() - t0)
        for suffix, dp in runners.items():
            comm.barrier()
            before = comm.stats["allreduce_seconds"], comm.stats["allreduce_wait_seconds"]
            t0 = time.perf_counter()
            dp.step(data)
            record(f"step_ms{suffix}", time.perf_counter() - t0)
            key = "allreduce_wait_ms" if suffix else "allreduce_ms"  # started early: the wait
            record(f"{key}{suffix}", comm.stats[key.replace("_ms", "_seconds")]
                   - before[1 if suffix else 0])
        comm.barrier()
        t0 = time.perf_counter()
        for buf in runners[""].buckets.buffers:
            comm.allreduce_(buf)
        record("allreduce_alone_ms", time.perf_counter() - t0)
        if i < 2:
            times.clear()
    med: dict[str, float] = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    med["bytes_per_step"] = runners[""].bytes_per_step
    return med


def parity(comm: Communicator, backend: str, steps: int, batch: int
           ) -> dict[str, float] | None:
    """N ranks with per-rank batch B/N vs one process with batch B (rank 0's figures)."""
    fwd = gpt_forward(16)
    out: dict[str, float] = {}
    for name, opt in (("sgd", SGD(0.1, momentum=0.9)), ("adam", Adam())):
        split = make_split_train_step(fwd, opt)
        dp = DataParallelRunner(split, comm, backend, **_options(backend))
        rng = np.random.default_rng(1)
        batches = [tokens(rng, batch, 16) for _ in range(steps)]
        b = batch // comm.size
        for full in batches:
            dp.step({k: v[comm.rank * b:(comm.rank + 1) * b] for k, v in full.items()})
        if comm.rank != 0:
            continue
        ref = make_step_runner(make_train_step(fwd, opt), backend, **_options(backend))
        for full in batches:
            ref.step(full)
        a, r = dp.state(), ref.state()
        ps = split.info.params
        diff = sum(float(np.sum((a[p].astype(np.float64) - r[p]) ** 2)) for p in ps)
        size = sum(float(np.sum(r[p].astype(np.float64) ** 2)) for p in ps)
        out[f"parity_rel_{name}"] = float(np.sqrt(diff / size))
        out[f"parity_elementwise_max_rel_{name}"] = max(
            float(np.abs(a[p] - r[p]).max() / np.abs(r[p]).max()) for p in ps)
    if comm.rank != 0:
        return None
    out["parity_max_rel"] = max(out["parity_rel_sgd"], out["parity_rel_adam"])
    out["parity_elementwise_max_rel"] = max(out["parity_elementwise_max_rel_sgd"],
                                            out["parity_elementwise_max_rel_adam"])
    return out


def main() -> None:
    """Measure and print on rank 0 (JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", choices=("numpy", "onnxruntime"), default="numpy")
    p.add_argument("--batch", type=int, default=8, help="sequences of 64 tokens per rank")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--parity-steps", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    comm = Communicator.world()
    with comm.guard():
        res: dict[str, Any] = timing(comm, args.backend, args.batch, args.repeat)
        par = parity(comm, args.backend, args.parity_steps, 4 * comm.size)
    if comm.rank != 0 or par is None:
        return
    res.update(par)
    res["allreduce_share"] = res["allreduce_ms"] / res["step_ms"]
    if "step_ms_overlap" in res:
        res["overlap_speedup"] = res["step_ms"] / res["step_ms_overlap"]
    res["scaling_efficiency"] = res["single_step_ms"] / res["step_ms"]
    res.update({"ranks": comm.size, "threads_per_rank": int(THREADS), "backend": args.backend,
                "model": "gpt_mini", "batch_per_rank": args.batch, "tokens_per_sequence": T})
    if args.json:
        print(json.dumps(res))
        return
    print(f"GPT-mini, {comm.size} ranks x {THREADS} thread(s), {args.backend}, per-rank batch "
          f"{args.batch}x{T}: step {res['step_ms']:.1f} ms, all-reduce {res['allreduce_ms']:.2f}"
          f" ms ({res['allreduce_share'] * 100:.1f}% of the step, goal <= 10%; "
          f"{res['allreduce_alone_ms']:.2f} ms after a barrier), {res['bytes_per_step']:,} bytes "
          f"per step; one process {res['single_step_ms']:.1f} ms: weak-scaling efficiency "
          f"{res['scaling_efficiency']:.2f}; parity after {args.parity_steps} steps: "
          f"{res['parity_max_rel']:.2g} relative (elementwise "
          f"{res['parity_elementwise_max_rel']:.2g})")
    if "overlap_speedup" in res:
        print(f"overlapping 1 MiB buckets with the backward pass: step "
              f"{res['step_ms_overlap']:.1f} ms, all-reduce wait "
              f"{res['allreduce_wait_ms_overlap']:.2f} ms, speedup {res['overlap_speedup']:.3f}")


if __name__ == "__main__":
    main()
