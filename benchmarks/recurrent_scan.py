"""An LSTM at a long sequence length, unrolled (static T) against one ``scan`` (symbolic T).

The scan is traced twice: in evaluation mode (its gradient recomputes the per-step carries with
a second forward scan) and in training mode (``scan_train``: the forward scan also stacks the
carries, which the gradient reads). For each form: the time to trace the forward graph and to
build its gradient graph (trace of forward + loss, then ``grad``), their node counts (top level,
and with the scan bodies' nodes), the ONNX file size, the ONNX Runtime session creation time,
and the median time of an inference call and of a forward + backward call on NumPy (an
``Interpreter`` compiled once) and on ONNX Runtime (one session), all forms timed in turn
(``interleaved``). Every library gets ``--threads`` threads (ORT's intra-op pool and the BLAS
pool, non-spinning ORT pools); ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved

from lbdl_graph.backends.numpy import run
from lbdl_graph.backends.numpy.interpreter import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.frontends import Tensor, manual_seed, nn, trace
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad

NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def _count(g: Graph) -> int:
    """Nodes of ``g`` and of every body graph inside it."""
    total = 0
    for n in g.nodes:
        total += 1
        for v in n.attrs.values():
            if isinstance(v, Graph):
                total += _count(v)
    return total


def _timed(fn: Callable[[], Graph]) -> tuple[Graph, float]:
    t0 = time.perf_counter()
    g = fn()
    return g, time.perf_counter() - t0


def measure(length: int, batch: int, hidden: int, repeat: int, threads: int) -> dict[str, Any]:
    """Every figure of both forms, as a flat dict."""
    manual_seed(0)
    m = nn.LSTM(hidden // 2, hidden, batch_first=True)

    def loss_fn(x: Tensor) -> dict[str, Tensor]:
        out, (_, c) = m(x)
        return {"loss": (out * out).mean() + (c * c).mean()}

    sym = ("N", "T", hidden // 2)
    forms = {"unrolled": ((batch, length, hidden // 2), False), "scan": (sym, False),
             "scan_train": (sym, True)}
    x = np.random.default_rng(0).normal(size=(batch, length, hidden // 2)).astype(np.float32)
    feeds = {"x": x}
    out: dict[str, Any] = {"length": length, "batch": batch, "hidden": hidden,
                           "threads": threads, "loadavg_start": list(os.getloadavg())}
    calls: dict[str, Callable[[], Any]] = {}
    opts: dict[str, Any] = {"session_options": NO_SPIN, "intra_op_threads": threads,
                            "training": False}
    for form, (shape, training) in forms.items():
        fwd, t_fwd = _timed(lambda shape=shape, t=training: trace(m, [shape], training=t))
        loss_g, t_loss = _timed(lambda shape=shape, t=training: trace(loss_fn, [shape],
                                                                      module=m, training=t))
        bwd, t_grad = _timed(lambda loss_g=loss_g: grad(loss_g, "loss"))
        out[f"{form}_trace_s"] = round(t_fwd, 4)
        out[f"{form}_grad_build_s"] = round(t_loss + t_grad, 4)
        out[f"{form}_nodes"] = len(fwd.nodes)
        out[f"{form}_nodes_with_bodies"] = _count(fwd)
        out[f"{form}_grad_nodes"] = len(bwd.nodes)
        out[f"{form}_grad_nodes_with_bodies"] = _count(bwd)
        out[f"{form}_onnx_bytes"] = to_onnx(fwd, training=False).ByteSize()
        t0 = time.perf_counter()
        ort_f = OrtRunner(fwd, **opts)
        ort_b = OrtRunner(bwd, **opts)
        out[f"{form}_ort_sessions_s"] = round(time.perf_counter() - t0, 3)
        np_f, np_b = Interpreter(fwd), Interpreter(bwd)  # compiled once, as a runner would
        calls[f"{form}_numpy_infer"] = lambda i=np_f: i.run(feeds)
        calls[f"{form}_ort_infer"] = lambda r=ort_f: r.run(feeds)
        calls[f"{form}_numpy_fwd_bwd"] = lambda i=np_b: i.run(feeds)
        calls[f"{form}_ort_fwd_bwd"] = lambda r=ort_b: r.run(feeds)
    got = {k: run(g, feeds) for k, g in (("a", trace(m, [forms["unrolled"][0]], training=False)),
                                          ("b", trace(m, [sym], training=False)))}
    out["max_abs_diff_scan_vs_unrolled"] = float(max(np.abs(got["a"][k] - got["b"][k]).max()
                                                     for k in got["a"]))
    for k, v in interleaved(calls, repeat, warmup=1).items():
        out[f"{k}_ms"] = round(v * 1e3, 2)
    for kind in ("numpy_infer", "ort_infer", "numpy_fwd_bwd", "ort_fwd_bwd"):
        for form in ("scan", "scan_train"):
            out[f"{kind}_{form}_over_unrolled"] = round(out[f"{form}_{kind}_ms"]
                                                        / out[f"unrolled_{kind}_ms"], 2)
    out["loadavg_end"] = list(os.getloadavg())
    return out


def report(r: dict[str, Any]) -> str:
    """A human-readable table of ``r``."""
    rows = ["trace_s", "grad_build_s", "nodes", "nodes_with_bodies", "grad_nodes",
            "grad_nodes_with_bodies", "onnx_bytes", "ort_sessions_s", "numpy_infer_ms",
            "ort_infer_ms", "numpy_fwd_bwd_ms", "ort_fwd_bwd_ms"]
    lines = [f"LSTM hidden {r['hidden']}, batch {r['batch']}, T={r['length']}, "
             f"{r['threads']} thread(s), load {r['loadavg_start'][0]:.2f} -> "
             f"{r['loadavg_end'][0]:.2f}",
             f"{'':26}{'unrolled':>12}{'scan':>12}{'scan_train':>12}"]
    for k in rows:
        lines.append(f"{k:26}{r[f'unrolled_{k}']:>12}{r[f'scan_{k}']:>12}"
                     f"{r[f'scan_train_{k}']:>12}")
    lines.append(f"scan vs unrolled max abs diff {r['max_abs_diff_scan_vs_unrolled']:.2e}")
    return "\n".join(lines)


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):
        res = measure(args.length, args.batch, args.hidden, args.repeat, args.threads)
    print(json.dumps(res, indent=2) if args.json else report(res))


if __name__ == "__main__":
    main()
