"""What the O2 pipeline buys: NumPy speed, fused kernels, compile time, and ONNX Runtime.

* NumPy backend, O2 vs O0 (evaluation mode, same weights): LeNet (batch 32), ResNet-tiny (batch
  16) and GPT-mini (batch 4 of 64 tokens; also batch 16). Goal: >= 1.3x on GPT-mini
  (``gpt_mini_o2_speedup``, batch 4).
* Each fused kernel against its decomposition run by the same interpreter (GPT-mini and
  ResNet-tiny sizes).
* Compile time: ``run_passes(graph, "O2")`` (verifier on, as users call it) on GPT-2 small
  (goal < 2 s, ``gpt2_small_compile_s``; tracing is not included) and on GPTs with 1x, 4x and
  16x the layers of GPT-mini (goal: near linear, ``compile_growth_16x`` = time at 16x / 1x).
* With torch installed: our O2 export (opset 21, and opset 23 with the standard Attention op)
  against the same model (our weights) exported by PyTorch (TorchScript exporter, opset 17),
  both on ONNX Runtime's CPU provider with all graph optimisations, one intra-op thread.

Timings are medians of interleaved rounds (baseline, candidate, baseline, ...) so that noise
from other processes hits both alike; BLAS runs on ``--threads`` threads (default 1: on a
shared machine, spinning BLAS threads make the figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from _timing import interleaved
from threadpoolctl import threadpool_limits

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.zoo import GPT, ZOO
from lbdl_graph.graph import Graph
from lbdl_graph.passes.manager import run_passes

try:  # PyTorch is optional: its comparison is skipped without it
    import torch
    from _torch_twins import torch_onnx, twin
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

# label -> (zoo entry, input dims); the ONNX Runtime comparison runs the first three
CASES: dict[str, tuple[str, dict[str, int]]] = {
    "lenet": ("lenet", {"N": 32}), "resnet_tiny": ("resnet_tiny", {"N": 16}),
    "gpt_mini": ("gpt_mini", {"N": 4, "T": 64}), "gpt_mini_b16": ("gpt_mini", {"N": 16, "T": 64})}
ORT_CASES = ("lenet", "resnet_tiny", "gpt_mini")
FUSED = ("linear", "fused_conv", "attention", "layer_norm", "gelu", "fused_elementwise")




def _close(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], tol: float = 1e-4) -> None:
    for (ka, va), vb in zip(a.items(), b.values(), strict=True):
        np.testing.assert_allclose(va, vb, rtol=tol, atol=tol, err_msg=ka)


def traced(name: str) -> tuple[Any, Graph]:
    """The zoo model (seed 0) and its evaluation-mode graph."""
    manual_seed(0)
    model = ZOO[name].model()
    return model, ZOO[name].trace(model)


# ----------------------------------------------------------------------------- NumPy backend


def numpy_figures(rounds: int) -> dict[str, Any]:
    """O0 vs O2 latency on the NumPy interpreter, with node and fused-node counts."""
    out: dict[str, Any] = {}
    for label, (name, dims) in CASES.items():
        _, g0 = traced(name)
        g2 = run_passes(g0, "O2").graph
        feeds = ZOO[name].example_inputs(dims)
        i0, i2 = Interpreter(g0, training=False), Interpreter(g2, training=False)
        _close(i0.run(feeds), i2.run(feeds))
        t = interleaved({"O0": lambda i=i0, f=feeds: i.run(f),
                         "O2": lambda i=i2, f=feeds: i.run(f)}, rounds)
        counts = g2.op_counts()
        out[label] = {"dims": dims, "o0_ms": t["O0"] * 1e3, "o2_ms": t["O2"] * 1e3,
                     "speedup": t["O0"] / t["O2"], "nodes_o0": len(g0.nodes),
                     "nodes_o2": len(g2.nodes),
                     "fused": {k: counts[k] for k in FUSED if k in counts}}
    return out


def _one_node(op: Any, arrays: list[np.ndarray | None], attrs: dict[str, Any],
              decomposed: bool) -> tuple[Graph, dict[str, np.ndarray]]:
    b = GraphBuilder(op.name)
    ins = [b.input(f"in{i}", a.dtype, a.shape) if a is not None else None
           for i, a in enumerate(arrays)]
    with b:
        y = op.decompose(*ins, **attrs) if decomposed else op(*ins, **attrs)
    return b.build([y]), {f"in{i}": a for i, a in enumerate(arrays) if a is not None}


def kernel_figures(rounds: int) -> dict[str, Any]:
    """Each fused kernel vs its decomposition, both through the interpreter."""
    rng = np.random.default_rng(0)

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    program = (("mul", (0, 1), ()), ("add", (3, 2), ()), ("sigmoid", (4,), ()),
               ("mul", (5, 4), ()), ("tanh", (6,), ()))
    silu = (("sigmoid", (0,), ()), ("mul", (0, 1), ()))
    cases: dict[str, tuple[Any, list[Any], dict[str, Any]]] = {
        "linear_gelu_tanh_256x128x512": (ops.linear, [r(4, 64, 128), r(128, 512), r(512)],
                                         {"activation": "gelu_tanh"}),
        "linear_gelu_256x128x512": (ops.linear, [r(4, 64, 128), r(128, 512), r(512)],
                                    {"activation": "gelu"}),
        "linear_256x128x384": (ops.linear, [r(4, 64, 128), r(128, 384), r(384)],
                               {"activation": "none"}),
        "attention_causal_4x4x64x32": (ops.attention, [r(4, 4, 64, 32) for _ in range(3)],
                                       {"scale": None, "causal": True}),
        "fused_conv_residual_relu_16x16x32x32": (
            ops.fused_conv, [r(16, 16, 32, 32), r(16, 16, 3, 3), r(16), r(16, 16, 32, 32)],
            {"pads": (1, 1, 1, 1), "activation": "relu"}),
        "fused_elementwise_5_steps_256x512": (ops.fused_elementwise,
                                              [r(256, 512), r(512), r(256, 512)],
                                              {"program": program}),
        "fused_elementwise_silu_16x16x16x16": (ops.fused_elementwise, [r(16, 16, 16, 16)],
                                               {"program": silu}),
    }
    out: dict[str, Any] = {}
    for label, (op, arrays, attrs) in cases.items():
        gf, feeds = _one_node(op, arrays, attrs, decomposed=False)
        gd, _ = _one_node(op, arrays, attrs, decomposed=True)
        fi, di = Interpreter(gf), Interpreter(gd)
        _close(fi.run(feeds), di.run(feeds))
        t = interleaved({"fused": lambda i=fi, f=feeds: i.run(f),
                         "decomposed": lambda i=di, f=feeds: i.run(f)}, rounds)
        out[label] = {"fused_us": t["fused"] * 1e6, "decomposed_us": t["decomposed"] * 1e6,
                      "speedup": t["decomposed"] / t["fused"]}
    return out


# ------------------------------------------------------------------------------ compile time


def compile_figures(repeat: int) -> dict[str, Any]:
    """O2 pipeline time on GPT-2 small and on GPTs of 1x, 4x and 16x GPT-mini's layers."""
    manual_seed(0)
    t0 = time.perf_counter()
    g = ZOO["gpt2_small"].trace()
    trace_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = run_passes(g, "O2")
        runs.append((time.perf_counter() - t0, r.report.seconds))
    total, passes = min(runs)
    out: dict[str, Any] = {"gpt2_small_trace_s": trace_s, "gpt2_small_compile_s": total,
                           "gpt2_small_passes_s": passes, "gpt2_small_nodes":
                           [len(g.nodes), len(r.graph.nodes)]}
    del g, r
    base = ZOO["gpt_mini"].config
    growth = []
    for mult in (1, 4, 16):
        cfg = replace(base, num_layers=base.num_layers * mult)
        gm = trace(GPT(cfg), {"idx": InputSpec(("N", "T"), "int64")}, name=f"gpt_x{mult}",
                   training=False)
        seconds = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            run_passes(gm, "O2")
            seconds.append(time.perf_counter() - t0)
        growth.append({"layers": cfg.num_layers, "nodes": len(gm.nodes), "s": min(seconds)})
    out["compile_growth"] = growth
    out["compile_growth_16x"] = growth[-1]["s"] / growth[0]["s"]
    return out


# ------------------------------------------------------------------- ONNX Runtime vs PyTorch


def ort_figures(rounds: int) -> dict[str, Any]:
    """Our O0 and O2 exports vs PyTorch's export of the same model, all on ORT's CPU provider."""
    if torch is None:
        return {"skipped": "torch is not installed"}
    out: dict[str, Any] = {}
    for name in ORT_CASES:
        dims = CASES[name][1]
        model, g0 = traced(name)
        g2 = run_passes(g0, "O2").graph
        feeds = ZOO[name].example_inputs(dims)
        tmodel = twin(name, ZOO[name].config, model.state_dict()).eval()
        inp, example = next(iter(feeds.items()))
        axes = {0: "N", 1: "T"} if name == "gpt_mini" else {0: "N"}
        sessions = {
            "ours_o0": OrtRunner(g0, providers="cpu", intra_op_threads=1, training=False),
            "ours_o2": OrtRunner(g2, providers="cpu", intra_op_threads=1, training=False),
            "ours_o2_opset23": OrtRunner(g2, providers="cpu", intra_op_threads=1,
                                         training=False, opset=23),
            "torch": OrtRunner(torch_onnx(tmodel, inp, example, axes), providers="cpu",
                               intra_op_threads=1),
        }
        results = {k: s.run(feeds) for k, s in sessions.items()}
        want = Interpreter(g0, training=False).run(feeds)
        for res in results.values():
            _close(dict(zip(want, res.values(), strict=True)), want)
        t = interleaved({k: lambda s=s, f=feeds: s.run(f) for k, s in sessions.items()}, rounds)
        out[name] = {**{f"{k}_ms": v * 1e3 for k, v in t.items()},
                     "torch_over_ours_o2": t["torch"] / t["ours_o2"],
                     "torch_over_ours_o2_opset23": t["torch"] / t["ours_o2_opset23"]}
    return out


def report(res: Mapping[str, Any]) -> str:
    """A readable summary."""
    lines = ["NumPy backend, O2 vs O0 (median ms):"]
    for name, f in res["numpy"].items():
        lines.append(f"  {name:12s} O0 {f['o0_ms']:8.2f}  O2 {f['o2_ms']:8.2f}  "
                     f"x{f['speedup']:.2f}  nodes {f['nodes_o0']} -> {f['nodes_o2']}  {f['fused']}")
    lines.append("fused kernels vs decompositions (median us):")
    for name, f in res["kernels"].items():
        lines.append(f"  {name:38s} {f['fused_us']:9.1f} vs {f['decomposed_us']:9.1f}  "
                     f"x{f['speedup']:.2f}")
    lines.append(f"GPT-2 small: trace {res['gpt2_small_trace_s']:.2f} s, O2 pipeline "
                 f"{res['gpt2_small_compile_s']:.3f} s (passes {res['gpt2_small_passes_s']:.3f} s)"
                 f" (goal < 2 s)")
    growth = ", ".join(f"{g['layers']} layers {g['s'] * 1e3:.0f} ms" for g in
                       res["compile_growth"])
    lines.append(f"compile growth: {growth}; 16x/1x = {res['compile_growth_16x']:.1f}")
    lines.append("ONNX Runtime CPU (median ms):")
    for name, f in res["ort"].items():
        lines.append(f"  {name:12s} {f}" if isinstance(f, str) else "  " + name + ": " + ", ".join(
            f"{k} {v:.3f}" for k, v in f.items()))
    return "\n".join(lines)


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="compile-time repetitions (min)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with threadpool_limits(limits=args.threads):
        res: dict[str, Any] = {"numpy": numpy_figures(args.rounds)}
        res["gpt_mini_o2_speedup"] = res["numpy"]["gpt_mini"]["speedup"]
        res["kernels"] = kernel_figures(args.rounds)
        res.update(compile_figures(args.repeat))
        res["ort"] = ort_figures(args.rounds)
    res["settings"] = {"blas_threads": args.threads, "ort_intra_op_threads": 1,
                       "rounds": args.rounds}
    print(json.dumps(res, indent=1) if args.json else report(res))


if __name__ == "__main__":
    main()
