"""GPU check: our ONNX export on CUDAExecutionProvider against the CPU provider and torch CUDA.

Run by hand (through ``benchmarks/gpu_check.sh``) when a GPU machine is at hand, never in CI.
For each model it checks, printing one table and exiting 1 on any mismatch:

* inference parity: the CUDA session's outputs equal the CPU session's within 1e-4 of the
  output's range (TF32 is switched off so that fp32 GEMMs stay fp32);
* train-step parity: ``--steps`` Adam steps on both providers give the same losses (1e-4
  relative) and the same parameters afterwards (1e-4 of each tensor's range);
* IOBinding: the stateful runner keeps every state tensor on the target device between steps;
* times: median train step and batch-64 inference on the target, and torch's (CUDA) when torch
  sees a GPU.

Without a usable CUDA provider it stops with exit status 2 and one line, unless
``--allow-cpu``, which runs the very same checks with the CPU provider as the target (a second
session, so parity is still checked end to end); nothing is printed about the missing GPU then.
``--quick`` checks only the MLP and two train steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _cases import LR, TRAIN_BATCH, Case, make_case, rel_err

from lbdl_graph.backends.onnx.runner import OrtRunner, cuda_available
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_train_step

RTOL = 1e-4
CUDA = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]


def timed(fn: Callable[[], Any], repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median milliseconds of ``fn`` after two warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def range_err(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| over the range of ref."""
    return float(np.abs(a - ref).max()) / (float(np.abs(ref).max()) + 1e-30)


def torch_times(case: Case, feed: dict[str, np.ndarray], x64: np.ndarray, repeat: int
                ) -> tuple[float | None, float | None]:
    """torch CUDA train-step and inference ms, or Nones without torch or a GPU."""
    try:
        import torch
        from _torch_twins import twin
    except ImportError:
        return None, None
    if not torch.cuda.is_available():
        return None, None
    dev = torch.device("cuda")
    model = twin(case.name, ZOO[case.name].config, case.model.state_dict()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    tx = torch.from_numpy(feed[case.input_name]).to(dev)
    ty = torch.from_numpy(feed["y"]).to(dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(tx)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]),
                                                 ty.reshape(-1))
        loss.backward()
        opt.step()

    ti = torch.from_numpy(x64).to(dev)

    def infer() -> None:
        with torch.no_grad():
            model(ti)

    sync = torch.cuda.synchronize
    return timed(step, repeat, sync), timed(infer, repeat, sync)


def check_model(name: str, target: Any, steps: int, repeat: int) -> dict[str, Any]:
    """One table row: parity errors, device placement and times of model ``name``."""
    case = make_case(name)
    row: dict[str, Any] = {"model": name}
    graph = ZOO[name].trace(case.model, training=False)
    x64 = case.inputs(64, np.random.default_rng(2))
    cpu_inf, dev_inf = OrtRunner(graph, providers="cpu"), OrtRunner(graph, providers=target)
    row["infer_err"] = range_err(dev_inf.run({case.input_name: x64})["output"],
                                 cpu_inf.run({case.input_name: x64})["output"])
    rng = np.random.default_rng(1)
    batch = TRAIN_BATCH[name]
    feed = {case.input_name: case.inputs(batch, rng), "y": case.targets(batch, rng)}
    fwd = trace_loss(case.model, {case.input_name: case.input_spec}, case.target_spec,
                     "cross_entropy", {}, training=True)
    step = make_train_step(fwd, Adam(LR))
    cpu = make_step_runner(step, "onnxruntime", providers="cpu")
    dev = make_step_runner(step, "onnxruntime", providers=target)
    loss_err = 0.0
    for _ in range(steps):
        a, b = float(cpu.step(feed)["loss"]), float(dev.step(feed)["loss"])
        loss_err = max(loss_err, rel_err(a, b))
    row["loss_err"] = loss_err
    ref, got = cpu.state(), dev.state()
    row["state_err"] = max(range_err(got[k], ref[k]) for k in step.info.params)
    want = "cuda" if "CUDAExecutionProvider" in dev.runner.providers else "cpu"
    row["device"] = want
    row["state_on_device"] = all(v.device_name().lower() == want
                                 for buf in dev._buffers for v in buf)
    row["train_ms"] = timed(lambda: dev.step(feed), repeat)
    row["infer_ms"] = timed(lambda: dev_inf.run({case.input_name: x64}), repeat)
    row["torch_train_ms"], row["torch_infer_ms"] = torch_times(case, feed, x64, repeat)
    row["ok"] = (max(row["infer_err"], row["loss_err"], row["state_err"]) <= RTOL
                 and row["state_on_device"])
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The one table printed."""
    cols = ("model", "device", "infer_err", "loss_err", "state_err", "state_on_device",
            "train_ms", "torch_train_ms", "infer_ms", "torch_infer_ms", "ok")
    out = ["  ".join(f"{c:>15}" for c in cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{'-':>15}" if v is None else f"{v:>15.2e}" if c.endswith("err")
                         else f"{v:>15.3f}" if isinstance(v, float) else f"{v!s:>15}")
        out.append("  ".join(cells))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 0 when all pass, 1 on a mismatch, 2 without a GPU (no --allow-cpu)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run on the CPU provider when CUDA is not usable")
    parser.add_argument("--quick", action="store_true", help="MLP only, two steps")
    parser.add_argument("--models", default="mlp,lenet,resnet_tiny,gpt_mini")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    if os.environ.get("GPU_CHECK_PRELOAD") == "1":  # gpu_check.sh: CUDA libraries from pip
        import onnxruntime as ort

        getattr(ort, "preload_dlls", lambda: None)()
    if cuda_available():
        target: Any = CUDA
    elif args.allow_cpu:
        target = "cpu"
    else:
        print("gpu_check: the CUDA execution provider is not usable here "
              "(pass --allow-cpu to run the checks on the CPU)", file=sys.stderr)
        return 2
    models = ["mlp"] if args.quick else args.models.split(",")
    steps, repeat = (2, 3) if args.quick else (args.steps, args.repeat)
    rows = [check_model(m, target, steps, repeat) for m in models]
    print(table(rows))
    bad = [r["model"] for r in rows if not r["ok"]]
    if bad:
        print(f"gpu_check: MISMATCH in {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
