"""Run under ``mpiexec -n N``: data-parallel steps vs one process, printed as JSON by rank 0.

For each case ``model:optimizer:backend[:flags]`` every rank runs ``steps`` data-parallel
steps on its contiguous slice (``batch / N`` samples) of the same global batches (flag
``sync``: batch norms all-reduce their statistics); one rank (i % N for case i, so the ranks
share this work) then runs the fused single-process step (plain batch norm) on the whole
batches and reports the relative difference of the parameter vectors (``rel`` =
||a - b|| / ||b|| over all parameters), the worst tensor by that measure (``norm_rel``) and
elementwise (``max_rel`` = max over tensors of max |a - b| / max |b|), the loss of both final
states on a fresh batch (``loss_rel``), the batch-norm running statistics elementwise
(``buffer_rel``), and how far the parameters moved (so a run that did not train cannot pass).
``f64`` runs the model in float64, where rounding noise (1e-16) stays far below Adam's
epsilon, so Adam's per-element normalisation cannot amplify it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.dtypes import dtype
from lbdl_graph.frontends import InputSpec, manual_seed, nn
from lbdl_graph.frontends.training.data_parallel import DataParallelRunner
from lbdl_graph.frontends.training.distributed import Communicator
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.passes.optim import SGD, Adam
from lbdl_graph.passes.train_step import make_split_train_step, make_train_step


def build(name: str) -> tuple[Any, dict[str, InputSpec], InputSpec, Any]:
    """(model, input specs, target spec, batch maker) of a test model."""
    from lbdl_graph.frontends import zoo

    manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))

        def mlp_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
            return {"x": rng.normal(size=(n, 20)).astype(np.float32),
                    "y": rng.integers(0, 5, n)}
        return model, {"x": InputSpec(("N", 20))}, InputSpec(("N",), "i64"), mlp_batch
    if name == "lenet":
        model = zoo.ZOO["lenet_digits"].model()

        def lenet_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
            return {"x": rng.random((n, 1, 8, 8)).astype(np.float32),
                    "y": rng.integers(0, 10, n)}
        return model, {"x": InputSpec(("N", 1, 8, 8))}, InputSpec(("N",), "i64"), lenet_batch
    if name == "bn":  # LeNet-like, with BatchNorm after the convolution and the hidden layer
        model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(54, 24), nn.BatchNorm1d(24), nn.ReLU(),
                              nn.Linear(24, 10))

        def bn_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
            return {"x": rng.random((n, 1, 8, 8)).astype(np.float32) * 2.0 + 0.5,
                    "y": rng.integers(0, 10, n)}
        return model, {"x": InputSpec(("N", 1, 8, 8))}, InputSpec(("N",), "i64"), bn_batch
    if name == "gpt_mini":
        model = zoo.ZOO["gpt_mini"].model()

        def gpt_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
            t = rng.integers(0, 96, (n, 17))
            return {"x": t[:, :-1], "y": t[:, 1:]}
        return model, {"x": InputSpec(("N", 16), "i64")}, InputSpec(("N", 16), "i64"), gpt_batch
    raise SystemExit(f"unknown model {name}")


def elementwise(a: np.ndarray, r: np.ndarray) -> float:
    """max |a - r| / max |r|."""
    return float(np.abs(a - r).max() / max(float(np.abs(r).max()), 1e-30))


def run_case(comm: Communicator, model_name: str, opt_name: str, backend: str, steps: int,
             batch: int, flags: str = "", owner: int = 0) -> dict[str, Any] | None:
    """One parity case (``flags``: ``sync`` batch norm, ``f64`` precision, joined by '+');
    the figures on rank ``owner`` (which runs the single-process reference), None elsewhere."""
    model, specs, target, make32 = build(model_name)
    f64 = "f64" in flags.split("+")
    if f64:  # float64 weights and inputs: rounding noise far below Adam's epsilon
        model.double()
        specs = {k: InputSpec(v.shape, "f64") if dtype(v.dtype).kind == "float" else v
                 for k, v in specs.items()}

    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float64) if f64 and v.dtype.kind == "f" else v
                for k, v in make32(rng, n).items()}
    fwd = trace_loss(model, specs, target, "cross_entropy", {}, training=True,
                     sync_batch_norm="sync" in flags.split("+"))
    opt = SGD(0.1, momentum=0.9) if opt_name == "sgd" else Adam()
    split = make_split_train_step(fwd, opt)
    backend, overlap = backend.removesuffix("+overlap"), backend.endswith("+overlap")
    options: dict[str, Any] = {"intra_op_threads": 1} if backend == "onnxruntime" else {}
    # overlapped: small buckets, each all-reduced as soon as the backward pass filled it
    runner = DataParallelRunner(split, comm, backend, overlap=overlap,
                                bucket_bytes=16 << 10 if overlap else 4 << 20, **options)
    rng = np.random.default_rng(1)
    batches = [make(rng, batch) for _ in range(steps)]
    b = batch // comm.size
    mine = slice(comm.rank * b, (comm.rank + 1) * b)
    for full in batches:
        runner.step({k: v[mine] for k, v in full.items()})
    if comm.rank != owner:  # every rank holds the same parameters: one checks them
        return None
    plain = trace_loss(model, specs, target, "cross_entropy", {}, training=True)
    fused = make_train_step(plain, opt)
    ref = make_step_runner(fused, backend, **options)
    for full in batches:
        ref.step(full)
    a, r = runner.state(), ref.state()
    init = split.initial_state
    ps = split.info.params
    rel = max(elementwise(a[p], r[p]) for p in ps)
    one = make_split_train_step(plain, opt)
    fresh = make(np.random.default_rng(99), batch)
    losses = [float(Interpreter(one.grad_graph).run({**fresh, **{s: st[s] for s in
                                                                 one.grad_state}})["loss"])
              for st in (a, r)]
    bufs = [s for s in split.info.state if s.endswith(("running_mean", "running_var"))]
    # the relative error in norm per tensor: Adam divides each gradient element by its own
    # running scale, so an element whose gradient is rounding noise (1e-7 of the tensor's
    # scale, where the order of the sums decides even its sign) moves by up to lr per step
    # either way; the norm weighs those few elements by their size
    norm_rel = max(float(np.linalg.norm(a[p] - r[p]) / max(float(np.linalg.norm(r[p])), 1e-30))
                   for p in split.info.params)
    diff = np.sqrt(sum(float(np.sum((a[p].astype(np.float64) - r[p]) ** 2)) for p in ps))
    size = np.sqrt(sum(float(np.sum(r[p].astype(np.float64) ** 2)) for p in ps))
    moved = max(float(np.abs(r[p] - init[p]).max()) for p in split.info.params)
    return {"case": f"{model_name}/{opt_name}/{backend}{'+overlap' * overlap}"
                    f"{'/' * bool(flags)}{flags}",
            "rel": diff / size, "max_rel": rel, "norm_rel": norm_rel, "moved": moved,
            "loss_rel": abs(losses[0] - losses[1]) / abs(losses[1]),
            "buffer_rel": max((elementwise(a[s], r[s]) for s in bufs), default=0.0),
            "buffers": len(bufs),
            "steps": int(a["step"]),
            "bytes": runner.bytes_per_step, "buckets": len(runner.buckets.buffers)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cases", nargs="+", help="model:optimizer:backend")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    comm = Communicator.world(timeout=60)
    with comm.guard():
        # rank i % N runs case i's single-process reference, so the ranks share that work
        mine = [run_case(comm, *c.split(":")[:3], args.steps, args.batch,
                         *(c.split(":")[3:] or [""]), owner=i % comm.size)
                for i, c in enumerate(args.cases)]
        results = [comm.broadcast_json(r, root=i % comm.size, what="parity figures")
                   for i, r in enumerate(mine)]
    if comm.rank == 0:
        print(json.dumps({"world_size": comm.size, "results": results}))


if __name__ == "__main__":
    main()
