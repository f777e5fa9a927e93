"""ONNX Runtime backend vs NumPy backend vs PyTorch eager: inference latency and train-step time.

Models (from the zoo, same weights everywhere):

* MLP 784-256-256-10 (``mlp``), train batch 64, Adam;
* LeNet (``lenet``: 2 conv + maxpool stages, 256-200-10), train batch 64, Adam;
* GPT-mini (``gpt_mini``: vocabulary 96, context 64, 4 layers, d 128, 4 heads), batch 16, Adam.

Columns: (a) our ORT backend (the CUDA provider when it really works, else the CPU one), (b) our
NumPy backend, (c) PyTorch eager on the CPU (the same architecture written with ``torch.nn``, our
weights loaded through ``load_state_dict``; a train step is forward + cross-entropy + backward
+ ``torch.optim.Adam`` step), (d) inference of the model exported by PyTorch's own exporter
(``torch.onnx.export``, TorchScript-based) on ORT with the same session options as ours. The
torch columns are skipped, with a note, when torch is not installed.

Inference latency is measured at batch 1 and 64 (GPT-mini: sequences of 64 tokens). Times are
medians over ``--repeat`` rounds in which the competitors run interleaved (ours, baseline, ours,
baseline, ...), so that noise from other processes hits all of them alike; compare the ratios.
Before timing, the losses of the first step (the forward pass) and of the second (after one Adam
update) of ours (ORT), ours (NumPy) and torch must agree within 1e-4 (relative), and the
inference outputs within 1e-4 of the output's range.

Every library gets ``--threads`` threads (default 1: ORT's intra-op pool, torch, OpenBLAS).
Since the libraries share one process and run interleaved, no thread pool may spin while
another library runs: ORT's sessions are created with ``session.intra_op.allow_spinning=0`` and
OpenMP (torch) gets ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported, unless already
set). Without that, at 2 threads ORT's spinning workers and torch's OpenMP threads steal each
other's cores and the ratios are meaningless. Train steps report the median, min and spread
(interquartile range / median) of the interleaved rounds; the speedups use medians and carry
the thread count in their key (``mlp_train_speedup_vs_torch_t2``). With ``--threads 0`` each
library keeps its default pool.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from _timing import interleaved, interleaved_stats

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.runner import OrtRunner, cuda_available
from lbdl_graph.frontends import InputSpec, manual_seed
from lbdl_graph.frontends.module import Module
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_train_step

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}

try:  # PyTorch is not a dependency: its columns are skipped without it
    import torch
    import torch.nn.functional as TF
    from _torch_twins import torch_onnx, twin
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

LR = 1e-3
LOSS_RTOL = 1e-4
INFER_BATCHES = (1, 64)
MODELS = ("mlp", "lenet", "resnet_tiny", "gpt_mini")
TRAIN_BATCH = {"mlp": 64, "lenet": 64, "resnet_tiny": 32, "gpt_mini": 16}
CLASSES = {"mlp": 10, "lenet": 10, "resnet_tiny": 10, "gpt_mini": 96}
IMAGE = {"mlp": (784,), "lenet": (1, 28, 28), "resnet_tiny": (3, 32, 32)}


# ---------------------------------------------------------------- timing




def rel_err(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|, tiny)."""
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Case:
    """One model: its zoo name, our module, the forward input name and data generators."""

    name: str
    model: Module
    input_name: str
    input_spec: InputSpec
    target_spec: InputSpec

    def inputs(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """A batch of model inputs."""
        if self.name == "gpt_mini":
            return rng.integers(0, CLASSES[self.name], (batch, 64)).astype(np.int64)
        shape = (batch, *IMAGE[self.name])
        return rng.standard_normal(shape).astype(np.float32)

    def targets(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """A batch of class targets."""
        shape = (batch, 64) if self.name == "gpt_mini" else (batch,)
        return rng.integers(0, CLASSES[self.name], shape).astype(np.int64)


def make_case(name: str) -> Case:
    """Build the zoo model ``name`` with a fixed seed."""
    manual_seed(0)
    model = ZOO[name].model()
    if name == "gpt_mini":
        return Case(name, model, "idx", InputSpec(("N", 64), "int64"),
                    InputSpec(("N", 64), "int64"))
    shape: tuple[Any, ...] = ("N", *IMAGE[name])
    return Case(name, model, "x", InputSpec(shape), InputSpec(("N",), "int64"))


# ---------------------------------------------------------------- PyTorch twins


def torch_twin(case: Case) -> Any:
    """The torch model of ``case`` carrying our weights."""
    return twin(case.name, ZOO[case.name].config, case.model.state_dict())


def torch_loss(out: Any, y: Any) -> Any:
    """Mean cross-entropy (sequence logits flattened as in our trainer)."""
    return TF.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


# ---------------------------------------------------------------- measurements


def train_figures(case: Case, repeat: int, opts: dict[str, Any], out: dict[str, Any]) -> None:
    """Train-step times, after checking that the competitors compute the same steps: the loss
    of the first step (the forward pass) and of the second (after one Adam update) agree."""
    name, batch = case.name, TRAIN_BATCH[case.name]
    rng = np.random.default_rng(1)
    feed = {case.input_name: case.inputs(batch, rng), "y": case.targets(batch, rng)}
    fwd = trace_loss(case.model, {case.input_name: case.input_spec}, case.target_spec,
                     "cross_entropy", {}, training=True)
    step = make_train_step(fwd, Adam(LR))
    ort_runner = make_step_runner(step, "onnxruntime", **opts)
    np_runner = make_step_runner(step, "numpy")
    fns: dict[str, Callable[[], Any]] = {"ort": lambda: float(ort_runner.step(feed)["loss"]),
                                         "numpy": lambda: float(np_runner.step(feed)["loss"])}
    if torch is not None:
        tmodel = torch_twin(case)
        opt = torch.optim.Adam(tmodel.parameters(), lr=LR)
        tx, ty = torch.from_numpy(feed[case.input_name]), torch.from_numpy(feed["y"])

        def torch_step() -> float:
            opt.zero_grad(set_to_none=True)
            loss = torch_loss(tmodel(tx), ty)
            loss.backward()
            opt.step()
            return float(loss.detach())

        fns["torch"] = torch_step
    worst = 0.0
    for i, when in enumerate(("first", "second")):
        losses = {k: fn() for k, fn in fns.items()}
        for k, v in losses.items():
            out[f"{name}_{when}_loss_{k}"] = v
            err = rel_err(v, losses["ort"])
            worst = max(worst, err)
            if err > LOSS_RTOL:
                raise AssertionError(f"{name}: step {i + 1} loss of {k} ({v}) differs from "
                                     f"ORT's ({losses['ort']}): relative {err:.2e} > {LOSS_RTOL}")
    out[f"{name}_loss_max_rel_diff"] = worst
    stats = interleaved_stats(fns, repeat)
    for k, st in stats.items():
        out[f"{name}_train_{k}_ms"] = st["median"] * 1e3
        out[f"{name}_train_{k}_min_ms"] = st["min"] * 1e3
        out[f"{name}_train_{k}_spread"] = st["spread"]
    times = {k: st["median"] for k, st in stats.items()}
    out[f"{name}_train_speedup_ort_vs_numpy"] = times["numpy"] / times["ort"]
    sp = times["torch"] / times["ort"] if "torch" in times else None
    out[f"{name}_train_speedup_vs_torch"] = sp
    out[f"{name}_train_speedup_vs_torch_t{out['threads']}"] = sp


def infer_figures(case: Case, repeat: int, opts: dict[str, Any], out: dict[str, Any]) -> None:
    """Inference latency at batch 1 and 64; outputs checked against ORT's."""
    name = case.name
    graph = ZOO[name].trace(case.model, training=False)
    ours = OrtRunner(graph, **opts)
    interp = Interpreter(graph, training=False)
    tmodel = tonnx = None
    if torch is not None:
        tmodel = torch_twin(case).eval()
        example = case.inputs(2, np.random.default_rng(3))
        # the same session options as ours
        tonnx = OrtRunner(torch_onnx(tmodel, case.input_name, example), **opts)
    for batch in INFER_BATCHES:
        x = case.inputs(batch, np.random.default_rng(2))
        feed = {case.input_name: x}
        ref = ours.run(feed)["output"]
        fns: dict[str, Callable[[], Any]] = {"ort": lambda f=feed: ours.run(f),
                                             "numpy": lambda f=feed: interp.run(f)}
        others = {"numpy": interp.run(feed)["output"]}
        if tmodel is not None and tonnx is not None:
            tx = torch.from_numpy(x)

            def eager(t: Any = tx) -> Any:
                with torch.no_grad():
                    return tmodel(t)

            fns["torch"] = eager
            fns["torch_onnx_ort"] = lambda f=feed: tonnx.run(f)
            others["torch"] = eager().numpy()
            others["torch_onnx_ort"] = tonnx.run(feed)["output"]
        for k, v in others.items():
            scale = float(np.abs(ref).max()) + 1e-30
            err = float(np.abs(v - ref).max()) / scale
            if err > 1e-4:
                raise AssertionError(f"{name} inference batch {batch}: {k} differs from ORT "
                                     f"(max error {err:.2e} of the output's range)")
        times = interleaved(fns, repeat)
        for k, v in times.items():
            out[f"{name}_infer_b{batch}_{k}_ms"] = v * 1e3
        out[f"{name}_infer_b{batch}_speedup_vs_torch_onnx"] = \
            times["torch_onnx_ort"] / times["ort"] if "torch_onnx_ort" in times else None


def run(repeat: int, models: tuple[str, ...], providers: str, threads: int) -> dict[str, Any]:
    """Every figure, as a flat dict. ``threads`` > 0 gives every library that many threads
    (ORT's intra-op pool, torch, OpenBLAS); 0 leaves each library's default."""
    from threadpoolctl import threadpool_limits

    opts: dict[str, Any] = {"providers": providers, "session_options": NO_SPIN}
    if threads:
        opts["intra_op_threads"] = threads
        if torch is not None:
            torch.set_num_threads(threads)
    out: dict[str, Any] = {"providers": providers, "threads": threads or "default",
                           "torch": torch.__version__ if torch is not None else None}
    out["loadavg_start"] = list(os.getloadavg())
    if torch is None:
        out["note"] = "torch is not installed: the torch columns are skipped (null)"
    with threadpool_limits(threads or None):
        for name in models:
            case = make_case(name)
            reps = max(5, repeat // 3) if name == "gpt_mini" else repeat
            train_figures(case, reps, opts, out)
            infer_figures(case, reps, opts, out)
    out["loadavg_end"] = list(os.getloadavg())
    return out


def report(res: Mapping[str, Any]) -> str:
    """A human-readable table of ``res``."""
    torch_note = res["torch"] or "not installed (torch columns skipped)"
    lines = [f"providers: {res['providers']}; threads: {res['threads']}; torch: {torch_note}; "
             f"load average {res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f}"]
    head = f"{'':28}{'ours ORT':>10}{'ours NumPy':>12}{'torch':>10}{'torch->ORT':>12}"
    for name in MODELS:
        if f"{name}_train_ort_ms" not in res:
            continue
        lines += ["", f"{name} (ms, median)", head]
        rows = [("train step", f"{name}_train")]
        rows += [(f"inference batch {b}", f"{name}_infer_b{b}") for b in INFER_BATCHES]
        for label, key in rows:
            cells = [res.get(f"{key}_{k}_ms") for k in ("ort", "numpy", "torch", "torch_onnx_ort")]
            lines.append(f"{label:28}" + "".join(
                f"{c:>{w}.3f}" if c is not None else f"{'-':>{w}}"
                for c, w in zip(cells, (10, 12, 10, 12), strict=True)))
        lines.append("train step min (ms) / spread: " + ", ".join(
            f"{k} {res[f'{name}_train_{k}_min_ms']:.3f} / {res[f'{name}_train_{k}_spread']:.0%}"
            for k in ("ort", "numpy", "torch") if f"{name}_train_{k}_min_ms" in res))
        sp = res.get(f"{name}_train_speedup_vs_torch")
        vs_np = res[f"{name}_train_speedup_ort_vs_numpy"]
        lines.append(f"train step speedup of ours (ORT): vs torch "
                     f"{f'{sp:.2f}x' if sp else '-'}, vs ours (NumPy) {vs_np:.2f}x")
        inf = [res.get(f"{name}_infer_b{b}_speedup_vs_torch_onnx") for b in INFER_BATCHES]
        if all(inf):
            lines.append("inference speedup of ours (ORT) vs torch's export on ORT: " + ", ".join(
                f"batch {b} {v:.2f}x" for b, v in zip(INFER_BATCHES, inf, strict=True)))
        lines.append(f"losses of steps 1 and 2 agree: max relative difference "
                     f"{res[f'{name}_loss_max_rel_diff']:.1e} (limit {LOSS_RTOL:.0e})")
    return "\n".join(lines)


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--providers", default=None, choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every library (0: each library's default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    providers = args.providers or ("cuda" if cuda_available() else "cpu")
    res = run(args.repeat, tuple(args.models.split(",")), providers, args.threads)
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
    else:
        print(report(res))


if __name__ == "__main__":
    main()
