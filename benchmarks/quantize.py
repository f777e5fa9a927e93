"""Quantisation benchmark: weight sizes, ONNX Runtime CPU speed of int8 vs fp32, accuracy.

Models (zoo): the MLP 784-256-256-10 (``mlp``) and LeNet (``lenet_digits``), both trained here
on scikit-learn's digits (the MLP reads them upsampled x3 and padded by 2 to 28x28, as
``lenet_digits`` does inside its graph, then flattened), and GPT-mini (``gpt_mini``, its seeded
initial weights, random tokens, T = 64).

* Sizes: bytes of the quantised matrices (matmul / linear weights) after
  ``quantize_weights(g, "q4_1")`` and ``quantize_weights(g, "int8")`` over their float32 bytes,
  for the MLP and GPT-mini together (per model in ``sizes``).
* Speed: ORT CPU inference at batch 64 of the float32 graph, the static int8 QDQ graph
  (``quantize_static``, minmax calibration on 8 batches), the dynamic int8 graph
  (``quantize_dynamic``, DynamicQuantizeMatMul) and Q4_1 weight-only (MatMulNBits). The
  variants run interleaved (fp32, static, dynamic, ... each round) and the figures are medians
  over ``--repeat`` rounds, so that noise from other processes hits all of them alike.
  ``int8_speedup_<model>`` is fp32 time / static int8 time.
* Accuracy: held-out digits accuracy of every variant on ORT (MLP, LeNet); GPT-mini: logit error
  of each variant against float32 (max |error| / max |logit|, mean |error|, top-1 agreement).
* Why: the ORT kernels of each int8 graph (from the optimised model ORT writes) and, for
  GPT-mini, ORT's per-op-type profile of the float32 and static int8 graphs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from _timing import interleaved
from sklearn.datasets import load_digits

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.quant import quantize_dynamic, quantize_static, quantize_weights

BATCH = 64
T = 64


def evaluate(g: Graph, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The calibration runner (NumPy)."""
    return Interpreter(g).run(feeds)


def digits() -> tuple[np.ndarray, ...]:
    """Digits as (N, 1, 8, 8) in [0, 1], the split of tests/training/test_fit.py."""
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def to_784(x: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) -> nearest x3 (24x24) -> zero padding 2 (28x28) -> (N, 784)."""
    up = x.repeat(3, axis=2).repeat(3, axis=3)
    return np.pad(up, ((0, 0), (0, 0), (2, 2), (2, 2))).reshape(len(x), 784)


def trained(name: str, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> Graph:
    """The zoo model ``name`` trained with fit (seed 0), traced for inference."""
    manual_seed(0)
    entry = ZOO[name]
    model = entry.model()
    fit(model, x, y, optimizer=Adam(lr), epochs=epochs, batch_size=64, progress=False)
    return entry.trace(model)


def variants(g: Graph, calib: list[dict[str, np.ndarray]], gpt: bool) -> dict[str, Graph]:
    """fp32 and its quantised versions."""
    out = {"fp32": g,
           "int8_static": quantize_static(g, calib, evaluate=evaluate).graph,
           "int8_dynamic": quantize_dynamic(g).graph,
           "q4_1": quantize_weights(g, "q4_1").graph}
    if gpt:  # attention's activation x activation matmuls left in float
        out["int8_static_weights_only"] = quantize_static(
            g, calib, evaluate=evaluate, activation_pairs=False).graph
    return out




def sessions(graphs: Mapping[str, Graph], threads: int | None) -> dict[str, OrtRunner]:
    return {k: OrtRunner(g, providers="cpu", intra_op_threads=threads) for k, g in graphs.items()}


def kernels(g: Graph) -> dict[str, int]:
    """Op types of the model ONNX Runtime runs after its graph optimisations."""
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(to_onnx(g).SerializeToString(), so,
                             providers=["CPUExecutionProvider"])
        nodes = onnx.load(so.optimized_model_filepath).graph.node
    return dict(collections.Counter(n.op_type for n in nodes).most_common())


def profile(g: Graph, feeds: Mapping[str, np.ndarray], runs: int, threads: int | None
            ) -> list[tuple[str, float]]:
    """Milliseconds of kernel time per run by ORT op type (ORT's profiler), largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        if threads is not None:
            so.intra_op_num_threads = threads
        s = ort.InferenceSession(to_onnx(g).SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
        for _ in range(runs):
            s.run(None, dict(feeds))
        with open(s.end_profiling()) as f:
            events = json.load(f)
    per: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return [(k, round(v, 2)) for k, v in per.most_common()]


def matmul_share(prof: list[tuple[str, float]]) -> float:
    """The fraction of kernel time spent in matrix products (float or integer)."""
    total = sum(ms for _, ms in prof)
    return round(sum(ms for op, ms in prof if "MatMul" in op or "Gemm" in op) / total, 3)


def size_ratios(graphs: Mapping[str, Graph]) -> dict[str, Any]:
    """Quantised / float32 bytes of the matrices, per model and in total."""
    out: dict[str, Any] = {}
    for scheme in ("q4_1", "int8"):
        before = after = 0
        for name, g in graphs.items():
            st = quantize_weights(g, scheme).stats
            out.setdefault(name, {})[scheme] = {
                "bytes_before": st["bytes_before"], "bytes_after": st["bytes_after"],
                "ratio": round(st["bytes_after"] / st["bytes_before"], 4)}
            before, after = before + st["bytes_before"], after + st["bytes_after"]
        out[f"{scheme}_total"] = round(after / before, 4)
    return out


def classifier(name: str, g: Graph, x: np.ndarray, y: np.ndarray, calib: np.ndarray,
               repeat: int, threads: int | None, timed: bool) -> dict[str, Any]:
    """Accuracy (and speed) of a digits classifier and its quantised versions."""
    cal = [{"x": calib[i:i + 64]} for i in range(0, 512, 64)]
    gs = variants(g, cal, gpt=False)
    rs = sessions(gs, threads)
    acc = {}
    for k, r in rs.items():
        pred = r.run({"x": x})["output"].argmax(1)
        ours = evaluate(gs[k], {"x": x})["output"].argmax(1)
        acc[k] = {"accuracy": round(float((pred == y).mean()), 4),
                  "numpy_agreement": round(float((pred == ours).mean()), 4)}
    for k in acc:
        acc[k]["delta_points"] = round(100 * (acc[k]["accuracy"] - acc["fp32"]["accuracy"]), 2)
    res: dict[str, Any] = {"accuracy": acc, "kernels": {k: kernels(v) for k, v in gs.items()
                                                        if k.startswith("int8")}}
    if timed:
        feeds = {"x": x[:BATCH]}
        med = interleaved({k: (lambda r=r: r.run(feeds)) for k, r in rs.items()}, repeat)
        res["latency_ms"] = {k: round(v * 1e3, 3) for k, v in med.items()}
        res["speedup"] = {k: round(med["fp32"] / v, 2) for k, v in med.items()}
    return res


def gpt_mini(repeat: int, threads: int | None) -> tuple[dict[str, Any], Graph]:
    """Speed, logit error and kernels of GPT-mini and its quantised versions."""
    manual_seed(0)
    entry = ZOO["gpt_mini"]
    g = entry.trace(entry.model())
    cal = [entry.example_inputs({"N": 8, "T": T}, seed=s) for s in range(1, 5)]
    gs = variants(g, cal, gpt=True)
    rs = sessions(gs, threads)
    feeds = entry.example_inputs({"N": BATCH, "T": T}, seed=0)
    ref = rs["fp32"].run(feeds)["output"]
    err = {}
    for k, r in rs.items():
        o = r.run(feeds)["output"]
        err[k] = {"max_rel": float(np.abs(o - ref).max() / np.abs(ref).max()),
                  "mean_abs": float(np.abs(o - ref).mean()),
                  "top1_agreement": float((o.argmax(-1) == ref.argmax(-1)).mean())}
    med = interleaved({k: (lambda r=r: r.run(feeds)) for k, r in rs.items()}, repeat)
    res = {"logit_error": err, "latency_ms": {k: round(v * 1e3, 2) for k, v in med.items()},
           "speedup": {k: round(med["fp32"] / v, 2) for k, v in med.items()},
           "kernels": {k: kernels(v) for k, v in gs.items() if k.startswith("int8")}}
    prof = {k: profile(gs[k], feeds, 5, threads) for k in ("fp32", "int8_static")}
    res["profile_ms"] = prof
    res["kernel_ms"] = {k: round(sum(ms for _, ms in v), 2) for k, v in prof.items()}
    res["matmul_share"] = {k: matmul_share(v) for k, v in prof.items()}
    return res, g


def run(repeat: int, epochs: int, threads: int | None) -> dict[str, Any]:
    """Every measurement; see the module docstring."""
    xtr, ytr, xte, yte = digits()
    mlp = trained("mlp", to_784(xtr), ytr, epochs, 1e-3)
    lenet = trained("lenet_digits", xtr, ytr, epochs, 2e-3)
    res: dict[str, Any] = {
        "mlp": classifier("mlp", mlp, to_784(xte), yte, to_784(xtr), repeat, threads, True),
        "lenet": classifier("lenet", lenet, xte, yte, xtr, repeat, threads, False)}
    res["gpt_mini"], gpt = gpt_mini(repeat, threads)
    res["sizes"] = size_ratios({"mlp": mlp, "gpt_mini": gpt})
    res["q4_1_size_ratio"] = res["sizes"]["q4_1_total"]
    res["int8_size_ratio"] = res["sizes"]["int8_total"]
    for m in ("mlp", "gpt_mini"):
        res[f"int8_speedup_{m}"] = res[m]["speedup"]["int8_static"]
        res[f"int8_dynamic_speedup_{m}"] = res[m]["speedup"]["int8_dynamic"]
    res["environment"] = {"onnxruntime": ort.__version__, "cpus": os.cpu_count(),
                          "intra_op_threads": threads, "batch": BATCH, "repeat": repeat,
                          "epochs": epochs}
    return res


def report(res: Mapping[str, Any]) -> str:
    """A short human-readable summary."""
    lines = [f"Q4_1 size ratio {res['q4_1_size_ratio']:.4f} (goal <= 0.16), int8 "
             f"{res['int8_size_ratio']:.4f} (goal <= 0.26)"]
    for m in ("mlp", "gpt_mini"):
        lat = ", ".join(f"{k} {v} ms" for k, v in res[m]["latency_ms"].items())
        lines.append(f"{m} batch {BATCH}: {lat}; int8 static speedup "
                     f"{res[f'int8_speedup_{m}']}x, dynamic {res[f'int8_dynamic_speedup_{m}']}x")
    for m in ("mlp", "lenet"):
        acc = ", ".join(f"{k} {100 * v['accuracy']:.2f}% ({v['delta_points']:+.2f})"
                        for k, v in res[m]["accuracy"].items())
        lines.append(f"{m} digits accuracy on ORT: {acc}")
    err = ", ".join(f"{k} {v['max_rel']:.4f}" for k, v in res["gpt_mini"]["logit_error"].items()
                    if k != "fp32")
    lines.append(f"gpt_mini max logit error / max |logit|: {err}")
    ms, share = res["gpt_mini"]["kernel_ms"], res["gpt_mini"]["matmul_share"]
    lines.append(f"gpt_mini ORT kernel time: fp32 {ms['fp32']} ms, of which matrix products "
                 f"{100 * share['fp32']:.0f}%; int8 static {ms['int8_static']} ms "
                 f"({100 * share['int8_static']:.0f}%)")
    return "\n".join(lines)


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = run(args.repeat, args.epochs, args.threads)
    print(json.dumps(res, indent=1, sort_keys=True) if args.json else report(res))


if __name__ == "__main__":
    main()
