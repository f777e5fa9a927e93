"""Where a train step's time goes: forward + backward and the optimizer update, ORT vs torch.

``python benchmarks/train_parts.py [--models mlp,lenet] [--threads 1] [--repeat 15] [--json]``
times, for each model, three tasks of our ONNX Runtime side and of the PyTorch twin, each
library in a process of its own, in the interleaved rounds of ``ort_backend.py``
(``_procs.rounds``):

* ``train``: the whole step (as ``ort_backend.py``: our compiled step with its state in ORT
  memory; torch forward + cross-entropy + backward + ``torch.optim.Adam`` step);
* ``grad``: forward + backward only (ours: the gradient graph of ``make_split_train_step`` with
  IOBinding into preallocated outputs; torch: the step without ``opt.step()``);
* ``update``: the optimizer alone (ours: the update graph, state in ORT memory; torch:
  ``opt.step()`` on the gradients left by ``grad``).

Reported per model and thread count: the median of each task (wall clock, and at one thread the
calling thread's CPU time), the torch/ORT ratio per task, and ``bound_free_update``: torch's
step over our ``grad`` alone, the speedup our step would have if its update cost nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
from typing import Any

from _procs import Contender, rounds

TASKS = ("train", "grad", "update")


def measure(name: str, threads: int, repeat: int, calls: int, out: dict[str, Any]) -> None:
    """The three tasks of one model at ``threads`` threads, ORT and torch interleaved."""
    with contextlib.ExitStack() as stack:
        cs = {}
        for kind in ("ort", "torch"):
            cs[kind] = Contender(kind, name, threads)
            stack.callback(cs[kind].close)
        for task in TASKS:
            stats = rounds(cs, task, repeat, calls)
            for k, st in stats.items():
                out[f"{name}_{task}_{k}_ms_t{threads}"] = st["median"] * 1e3
                if threads == 1:
                    out[f"{name}_{task}_{k}_cpu_ms_t1"] = st["cpu_median"] * 1e3
            key = "cpu_median" if threads == 1 else "median"
            out[f"{name}_{task}_torch_over_ort_t{threads}"] = stats["torch"][key] / \
                stats["ort"][key]
            if task == "train":
                torch_train = stats["torch"][key]
            if task == "grad":
                out[f"{name}_bound_free_update_t{threads}"] = torch_train / stats["ort"][key]


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is None:
        raise SystemExit("train_parts.py compares against torch, which is not installed")
    out: dict[str, Any] = {"method": "one process per library, interleaved rounds; at one "
                                     "thread ratios use thread CPU time, else wall time",
                           "repeat": args.repeat, "calls": args.calls}
    for t in (int(x) for x in args.threads.split(",")):
        out[f"loadavg_start_t{t}"] = list(os.getloadavg())
        for name in args.models.split(","):
            measure(name, t, args.repeat, args.calls, out)
    if args.json:
        print(json.dumps(out, indent=1, sort_keys=True))
        return
    for k in sorted(out):
        v = out[k]
        print(f"{k:44} {v:.3f}" if isinstance(v, float) else f"{k:44} {v}")


if __name__ == "__main__":
    main()
