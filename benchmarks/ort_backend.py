"""ONNX Runtime backend vs NumPy backend vs PyTorch eager: inference latency and train-step time.

Models (from the zoo, same weights everywhere):

* MLP 784-256-256-10 (``mlp``), train batch 64, Adam;
* LeNet (``lenet``: 2 conv + maxpool stages, 256-200-10), train batch 64, Adam;
* ResNet-tiny (``resnet_tiny``: CIFAR stem, basic blocks with batch norm), batch 32, Adam;
* GPT-mini (``gpt_mini``: vocabulary 96, context 64, 4 layers, d 128, 4 heads), batch 16, Adam.

Columns: (a) our ORT backend (the CUDA provider when it really works, else the CPU one), (b) our
NumPy backend, (c) PyTorch eager on the CPU (the same architecture written with ``torch.nn``, our
weights loaded through ``load_state_dict``; a train step is forward + cross-entropy + backward
+ ``torch.optim.Adam`` step, with torch's default implementation), (d) inference of the model
exported by PyTorch's own exporter (``torch.onnx.export``, TorchScript-based) on ORT with the
same session options as ours. The torch columns are skipped, with a note, when torch is missing.

Each contender runs in a process of its own (``_contender.py``), one library per process (the
process reports what it loaded and the run stops if a second library got in), with ``--threads``
threads (ORT's intra-op pool, torch, OpenMP/OpenBLAS through the environment). Thread pools do
not spin by default (ORT ``session.intra_op.allow_spinning=0``, ``OMP_WAIT_POLICY=PASSIVE``,
``OPENBLAS_THREAD_TIMEOUT=4``; ``--spin`` keeps the libraries' defaults), so a process that
just finished cannot steal the cores of the next one. Timing goes in interleaved rounds: in
each round every contender runs ``--calls`` calls in turn while the others wait blocked on
their pipe, the first of the round rotating; a round's figure is the median of its calls.
Reported per contender: the median and min over ``--repeat`` rounds and the spread
(interquartile range / median); speedups use the medians. ``--threads 1,2`` measures each
thread count in turn; every timing key ends in the thread count (``mlp_train_ort_ms_t1``,
``mlp_train_speedup_vs_torch_t2``). At one thread every library computes in the calling thread,
so the train steps also report its CPU time (``mlp_train_ort_cpu_ms_t1``,
``mlp_train_speedup_vs_torch_cpu_t1``): on a shared machine it leaves out the time a step was
preempted, which the wall clock counts.

Before timing, the losses of the first step (the forward pass) and of the second (after one Adam
update) of ours (ORT), ours (NumPy) and torch must agree within 1e-4 (relative), and the
inference outputs within 1e-4 of the output's range. ``--threads 0`` leaves each library's
default pool.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _cases import INFER_BATCHES, LR, MODELS, TRAIN_BATCH, Case, make_case, rel_err
from _procs import Contender, rounds

__all__ = ["LR", "MODELS", "TRAIN_BATCH", "Case", "make_case", "rel_err"]

LOSS_RTOL = 1e-4
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def train_figures(name: str, cs: Mapping[str, Contender], args: argparse.Namespace,
                  t: int, out: dict[str, Any]) -> None:
    """Train-step times, after checking that the contenders compute the same steps: the loss
    of the first step (the forward pass) and of the second (after one Adam update) agree."""
    train = {k: c for k, c in cs.items() if "train" in c.tasks}
    losses = {k: c.ask("check", task="train")["losses"] for k, c in train.items()}
    worst = 0.0
    for i, when in enumerate(("first", "second")):
        for k, v in losses.items():
            out[f"{name}_{when}_loss_{k}"] = v[i]
            err = rel_err(v[i], losses["ort"][i])
            worst = max(worst, err)
            if err > LOSS_RTOL:
                raise AssertionError(f"{name}: step {i + 1} loss of {k} ({v[i]}) differs from "
                                     f"ORT's ({losses['ort'][i]}): relative {err:.2e}")
    out[f"{name}_loss_max_rel_diff"] = worst
    reps = max(5, args.repeat // 3) if name == "gpt_mini" else args.repeat
    stats = rounds(train, "train", reps, args.calls)
    for k, st in stats.items():
        out[f"{name}_train_{k}_ms_t{t}"] = st["median"] * 1e3
        out[f"{name}_train_{k}_min_ms_t{t}"] = st["min"] * 1e3
        out[f"{name}_train_{k}_spread_t{t}"] = st["spread"]
    if t == 1:  # one thread: every library computes in the calling thread
        for k, st in stats.items():
            out[f"{name}_train_{k}_cpu_ms_t1"] = st["cpu_median"] * 1e3
        if "torch" in stats:
            out[f"{name}_train_speedup_vs_torch_cpu_t1"] = \
                stats["torch"]["cpu_median"] / stats["ort"]["cpu_median"]
    med = {k: st["median"] for k, st in stats.items()}
    out[f"{name}_train_speedup_ort_vs_numpy_t{t}"] = med["numpy"] / med["ort"]
    out[f"{name}_train_speedup_vs_torch_t{t}"] = med["torch"] / med["ort"] if "torch" in med \
        else None


def infer_figures(name: str, cs: Mapping[str, Contender], args: argparse.Namespace,
                  t: int, tmp: Path, out: dict[str, Any]) -> None:
    """Inference latency at batch 1 and 64; outputs checked against ORT's."""
    reps = max(5, args.repeat // 3) if name == "gpt_mini" else args.repeat
    for batch in INFER_BATCHES:
        task = f"infer_b{batch}"
        outs = {}
        for k, c in cs.items():
            path = tmp / f"{name}_{k}_{task}.npy"
            c.ask("check", task=task, path=str(path))
            outs[k] = np.load(path, allow_pickle=False)
        ref = outs["ort"]
        for k, v in outs.items():
            err = float(np.abs(v - ref).max()) / (float(np.abs(ref).max()) + 1e-30)
            if err > 1e-4:
                raise AssertionError(f"{name} inference batch {batch}: {k} differs from ORT "
                                     f"(max error {err:.2e} of the output's range)")
        stats = rounds(cs, task, reps, args.calls)
        for k, st in stats.items():
            out[f"{name}_infer_b{batch}_{k}_ms_t{t}"] = st["median"] * 1e3
        out[f"{name}_infer_b{batch}_speedup_vs_torch_onnx_t{t}"] = \
            stats["torch_onnx_ort"]["median"] / stats["ort"]["median"] \
            if "torch_onnx_ort" in stats else None


def measure(name: str, args: argparse.Namespace, t: int, out: dict[str, Any]) -> None:
    """Start the contenders of one model at ``t`` threads, measure, stop them."""
    opts: dict[str, Any] = {"providers": args.providers, "spin": args.spin}
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        cs: dict[str, Contender] = {}
        for kind in ("ort", "numpy", *(("torch",) if HAVE_TORCH else ())):
            cs[kind] = Contender(kind, name, t, **opts)
            stack.callback(cs[kind].close)
        if HAVE_TORCH:
            path = tmp / f"{name}_torch.onnx"
            cs["torch"].ask("export", path=str(path))
            cs["torch_onnx_ort"] = Contender("torch_onnx_ort", name, t, onnx=str(path), **opts)
            stack.callback(cs["torch_onnx_ort"].close)
        out.setdefault("libraries_per_process", {}).update(
            {k: c.libs for k, c in cs.items()})
        train_figures(name, cs, args, t, out)
        infer_figures(name, cs, args, t, tmp, out)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, as a flat dict."""
    out: dict[str, Any] = {"providers": args.providers, "threads": args.threads,
                           "repeat": args.repeat, "calls": args.calls, "spin": args.spin,
                           "method": "one process per contender, interleaved rounds"}
    if not HAVE_TORCH:
        out["note"] = "torch is not installed: the torch columns are skipped (null)"
    for t in args.threads:
        out[f"loadavg_start_t{t}"] = list(os.getloadavg())
        for name in args.models:
            measure(name, args, t, out)
        out[f"loadavg_end_t{t}"] = list(os.getloadavg())
    return out


def report(res: Mapping[str, Any]) -> str:
    """A human-readable table of ``res``."""
    lines = [f"providers: {res['providers']}; {res['method']}; {res['repeat']} rounds of "
             f"{res['calls']} calls; spinning {'on' if res['spin'] else 'off'}"]
    head = f"{'':28}{'ours ORT':>10}{'ours NumPy':>12}{'torch':>10}{'torch->ORT':>12}"
    for t in res["threads"]:
        lines += ["", f"== {t} thread(s); load average {res[f'loadavg_start_t{t}'][0]:.2f} -> "
                      f"{res[f'loadavg_end_t{t}'][0]:.2f}"]
        for name in MODELS:
            if f"{name}_train_ort_ms_t{t}" not in res:
                continue
            lines += ["", f"{name} (ms, median of rounds)", head]
            rows = [("train step", f"{name}_train")]
            rows += [(f"inference batch {b}", f"{name}_infer_b{b}") for b in INFER_BATCHES]
            for label, key in rows:
                cells = [res.get(f"{key}_{k}_ms_t{t}")
                         for k in ("ort", "numpy", "torch", "torch_onnx_ort")]
                lines.append(f"{label:28}" + "".join(
                    f"{c:>{w}.3f}" if c is not None else f"{'-':>{w}}"
                    for c, w in zip(cells, (10, 12, 10, 12), strict=True)))
            lines.append("train step min (ms) / spread: " + ", ".join(
                f"{k} {res[f'{name}_train_{k}_min_ms_t{t}']:.3f} / "
                f"{res[f'{name}_train_{k}_spread_t{t}']:.0%}"
                for k in ("ort", "numpy", "torch") if f"{name}_train_{k}_min_ms_t{t}" in res))
            cpu = res.get(f"{name}_train_speedup_vs_torch_cpu_t{t}")
            if cpu:
                lines.append("train step thread CPU time (ms): " + ", ".join(
                    f"{k} {res[f'{name}_train_{k}_cpu_ms_t{t}']:.3f}"
                    for k in ("ort", "numpy", "torch")) + f"; speedup vs torch {cpu:.2f}x")
            sp = res.get(f"{name}_train_speedup_vs_torch_t{t}")
            vs_np = res[f"{name}_train_speedup_ort_vs_numpy_t{t}"]
            lines.append(f"train step speedup of ours (ORT): vs torch "
                         f"{f'{sp:.2f}x' if sp else '-'}, vs ours (NumPy) {vs_np:.2f}x")
            inf = [res.get(f"{name}_infer_b{b}_speedup_vs_torch_onnx_t{t}")
                   for b in INFER_BATCHES]
            if all(inf):
                lines.append("inference speedup of ours (ORT) vs torch's export on ORT: " +
                             ", ".join(f"batch {b} {v:.2f}x"
                                       for b, v in zip(INFER_BATCHES, inf, strict=True)))
            lines.append(f"losses of steps 1 and 2 agree: max relative difference "
                         f"{res[f'{name}_loss_max_rel_diff']:.1e} (limit {LOSS_RTOL:.0e})")
    return "\n".join(lines)


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per round")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--providers", default=None, choices=("cpu", "cuda"))
    parser.add_argument("--threads", default="1",
                        help="thread counts to measure, comma separated (0: library defaults)")
    parser.add_argument("--spin", action="store_true", help="let thread pools spin")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.models = tuple(args.models.split(","))
    if args.providers is None:
        from lbdl_graph.backends.onnx.runner import cuda_available

        args.providers = "cuda" if cuda_available() else "cpu"
    res = run(args)
    print(json.dumps(res, indent=1, sort_keys=True) if args.json else report(res))


if __name__ == "__main__":
    main()
