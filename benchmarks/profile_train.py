"""Per-op profile of a zoo model's exported train step on ONNX Runtime, against a GEMM ceiling.

``python benchmarks/profile_train.py MODEL [--threads N] [--steps K] [--json]`` builds the train
step exactly as ``benchmarks/ort_backend.py`` does (cross-entropy, Adam, state kept in ORT
memory through IOBinding), runs ``K`` steps with ORT's profiler on
(``SessionOptions.enable_profiling``) and prints two tables, per ONNX op type and per scope
(``lbdl.scope`` node metadata, cut to ``--scope-depth`` parts): kernel time per step, share of
the kernel total, node count and bytes moved per step (inputs + weights + outputs, from the
profiler's sizes). The first profiled step is a warm-up and is left out.

It then measures, in the same process at the same thread count, a large fp32 MatMul
(``--gemm-size`` cubed) on ORT: the GEMM ceiling. The train step's FLOPs are counted as
6 x trainable parameters x tokens (tokens: batch x sequence length), plus, for GPT models,
attention (12 x batch x T^2 x d per layer: QK^T and AV, forward and two backward products);
``train_gflops`` divides them by the median unprofiled step time and ``ceiling_share`` by the
ceiling. For convolutional models 6 x parameters x batch undercounts (weights are reused over
the image), so their share is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _cases import LR, MODELS, TRAIN_BATCH, make_case
from onnx import TensorProto, helper

from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import TrainStep, make_train_step

GEMM_OPS = frozenset({"MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulNBits"})
NO_SCOPE = "(no scope)"


def build_step(name: str) -> tuple[TrainStep, dict[str, np.ndarray]]:
    """The model's train step and one batch (as in ``ort_backend.py``)."""
    case = make_case(name)
    batch = TRAIN_BATCH[name]
    rng = np.random.default_rng(1)
    feed = {case.input_name: case.inputs(batch, rng), "y": case.targets(batch, rng)}
    fwd = trace_loss(case.model, {case.input_name: case.input_spec}, case.target_spec,
                     "cross_entropy", {}, training=True)
    return make_train_step(fwd, Adam(LR)), feed


def train_flops(name: str, step: TrainStep, feed: Mapping[str, np.ndarray]) -> float:
    """6 x parameters x tokens, plus attention for GPT models."""
    params = sum(int(np.asarray(step.initial_state[p]).size) for p in step.info.params)
    y = feed["y"]
    tokens = int(y.size)
    flops = 6.0 * params * tokens
    cfg = ZOO[name].config
    if hasattr(cfg, "num_layers") and hasattr(cfg, "d_model") and y.ndim == 2:
        n, t = y.shape
        flops += 12.0 * n * t * t * cfg.d_model * cfg.num_layers
    return flops


def node_scopes(runner: OrtRunner, depth: int) -> dict[str, tuple[str, str]]:
    """ONNX node name -> (scope cut to ``depth`` parts, op type) from the exported metadata."""
    out: dict[str, tuple[str, str]] = {}
    for n in runner.model.graph.node:
        props = {p.key: p.value for p in n.metadata_props}
        scope = props.get("lbdl.scope", "")
        out[n.name] = (".".join(scope.split(".")[:depth]) if scope else NO_SCOPE, n.op_type)
    return out


def _scope_of(node: str, scopes: Mapping[str, tuple[str, str]]) -> str:
    """The scope of a (possibly ORT-fused, ``<first>/<Fusion>``) node name."""
    name = node
    while name:
        if name in scopes:
            return scopes[name][0]
        name = name.rpartition("/")[0]
    return "(made by ORT)"


def parse_profile(events: list[dict[str, Any]], scopes: Mapping[str, tuple[str, str]]
                  ) -> tuple[list[dict[str, Any]], int]:
    """Kernel events of every model run but the first, as records; and how many runs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) < 2:
        raise RuntimeError(f"the profile holds {len(runs)} model runs; need 2 or more")
    kept = runs[1:]
    recs: list[dict[str, Any]] = []
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in kept):
            continue
        args = e.get("args", {})
        node = e["name"][: -len("_kernel_time")]
        moved = sum(int(args.get(k, 0) or 0) for k in
                    ("activation_size", "parameter_size", "output_size"))
        recs.append({"node": node, "op": args.get("op_name", "?"), "us": float(e["dur"]),
                     "bytes": moved, "scope": _scope_of(node, scopes)})
    return recs, len(kept)


def table(recs: list[dict[str, Any]], key: str, runs: int) -> list[dict[str, Any]]:
    """Rows grouped by ``key``: ms per step, share, nodes per step, MB moved per step."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in recs:
        a = acc[r[key]]
        a[0] += r["us"]
        a[1] += 1
        a[2] += r["bytes"]
    total = sum(a[0] for a in acc.values()) or 1.0
    rows = [{key: k, "ms": a[0] / runs / 1e3, "share": a[0] / total, "count": a[1] / runs,
             "mb": a[2] / runs / 1e6} for k, a in acc.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def gemm_ceiling(size: int, threads: int, repeat: int = 7) -> float:
    """GFLOP/s of an fp32 ``size``-cubed MatMul on ORT with ``threads`` intra-op threads."""
    f = TensorProto.FLOAT
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                          [helper.make_tensor_value_info("a", f, [size, size]),
                           helper.make_tensor_value_info("b", f, [size, size])],
                          [helper.make_tensor_value_info("c", f, [size, size])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    r = OrtRunner(m, providers="cpu", intra_op_threads=threads)
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((size, size), np.float32),
            "b": rng.standard_normal((size, size), np.float32)}
    r.run(feed)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r.run(feed)
        times.append(time.perf_counter() - t0)
    return 2.0 * size**3 / float(np.min(times)) / 1e9


def profile(name: str, threads: int, steps: int, depth: int, gemm_size: int
            ) -> dict[str, Any]:
    """Every figure of one model, as a dict."""
    step, feed = build_step(name)
    opts: dict[str, Any] = {"providers": "cpu", "intra_op_threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        prof = make_step_runner(step, "onnxruntime", **opts, session_options={
            "enable_profiling": True, "profile_file_prefix": str(Path(tmp) / "p")})
        for _ in range(steps + 1):
            prof.step(feed)
        path = prof.runner.session.end_profiling()
        events = json.loads(Path(path).read_text())
    recs, runs = parse_profile(events, node_scopes(prof.runner, depth))
    timed = make_step_runner(step, "onnxruntime", **opts)
    for _ in range(3):
        timed.step(feed)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        timed.step(feed)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    ceiling = gemm_ceiling(gemm_size, threads)
    flops = train_flops(name, step, feed)
    kernel_ms = sum(r["us"] for r in recs) / runs / 1e3
    gemm_ms = sum(r["us"] for r in recs if r["op"] in GEMM_OPS) / runs / 1e3
    train_gflops = flops / step_s / 1e9
    return {
        "model": name, "threads": threads, "profiled_steps": runs,
        "step_ms_median": step_s * 1e3, "step_ms_min": float(np.min(times)) * 1e3,
        "kernel_ms_per_step": kernel_ms, "gemm_ms_per_step": gemm_ms,
        "gemm_time_share": gemm_ms / kernel_ms if kernel_ms else 0.0,
        "train_gflop_per_step": flops / 1e9, "train_gflops": train_gflops,
        "gemm_ceiling_gflops": ceiling, "ceiling_share": train_gflops / ceiling,
        "by_op": table(recs, "op", runs), "by_scope": table(recs, "scope", runs),
    }


def report(res: Mapping[str, Any], top: int) -> str:
    """Human-readable tables."""
    lines = [f"{res['model']}: threads {res['threads']}, {res['profiled_steps']} profiled steps; "
             f"step {res['step_ms_median']:.3f} ms median ({res['step_ms_min']:.3f} min), "
             f"kernels {res['kernel_ms_per_step']:.3f} ms/step"]
    for key, title in (("op", "op type"), ("scope", "scope")):
        lines += ["", f"{title:32}{'ms/step':>10}{'share':>8}{'nodes':>8}{'MB/step':>10}"]
        for r in res[f"by_{key}"][:top]:
            lines.append(f"{str(r[key])[:31]:32}{r['ms']:>10.3f}{r['share']:>8.1%}"
                         f"{r['count']:>8.0f}{r['mb']:>10.2f}")
    lines += ["", f"GEMM ops: {res['gemm_ms_per_step']:.3f} ms/step, "
                  f"{res['gemm_time_share']:.1%} of kernel time",
              f"train step: {res['train_gflop_per_step']:.3f} GFLOP, "
              f"{res['train_gflops']:.1f} GFLOP/s; GEMM ceiling "
              f"{res['gemm_ceiling_gflops']:.1f} GFLOP/s; share {res['ceiling_share']:.1%}"]
    return "\n".join(lines)


def main() -> None:
    """Profile and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scope-depth", type=int, default=2)
    parser.add_argument("--gemm-size", type=int, default=1024)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):
        res = profile(args.model, args.threads, args.steps, args.scope_depth, args.gemm_size)
    print(json.dumps(res, indent=1) if args.json else report(res, args.top))


if __name__ == "__main__":
    main()
