"""``lbdl-graph run MODEL.onnx``: run an ONNX model once on NumPy or ONNX Runtime.

Inputs come from ``--input NAME=FILE.npy`` items and ``--inputs FILE.npz``; every other input is
drawn at random (floats standard normal, integers in [0, 2)) with symbolic dims bound by
``--bind N=4`` (default 1). Prints each output's name, dtype, shape and statistics and can save
the outputs to an ``.npz``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    CliError,
    check_output,
    load_arrays,
    parse_bind,
    random_feeds,
    save_npz,
)

__all__ = ["output_table", "register"]


def _stats(a: np.ndarray) -> str:
    if a.size == 0:
        return "empty"
    if a.dtype.kind == "b":
        return f"true {int(a.sum())}/{a.size}"
    if a.dtype.kind not in "iuf":
        return ""
    x = a.astype(np.float64)
    finite = np.isfinite(x)
    text = (f"min {x[finite].min():.4g}  max {x[finite].max():.4g}  mean {x[finite].mean():.4g}"
            f"  std {x[finite].std():.4g}") if finite.any() else "no finite values"
    bad = int(a.size - finite.sum())
    return text + (f"  non-finite {bad}" if bad else "")


def output_table(outputs: Mapping[str, np.ndarray]) -> str:
    """One line per array: name, dtype[shape] and statistics."""
    width = max((len(k) for k in outputs), default=4)
    lines = []
    for name, arr in outputs.items():
        a = np.asarray(arr)
        ty = f"{a.dtype.name}{list(a.shape)}"
        lines.append(f"  {name:<{width}}  {ty:<24}  {_stats(a)}".rstrip())
    return "\n".join(lines)


def _specs_numpy(graph: Any) -> list[tuple[str, Any, tuple[Any, ...]]]:
    return [(v.name, v.dtype, tuple(v.shape)) for v in graph.inputs]


def run_model(path: Path, backend: str, given: Mapping[str, np.ndarray], dims: Mapping[str, int],
              seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Run the model at ``path``; returns (outputs, the feeds used, a backend label)."""
    if backend == "onnxruntime":
        from lbdl_graph.backends.onnx import OrtRunner

        runner = OrtRunner(path)
        feeds = random_feeds(runner.specs, dims, seed, given)
        return runner.run(feeds), feeds, f"onnxruntime ({runner.providers[0]})"
    from lbdl_graph.backends.numpy import Interpreter
    from lbdl_graph.frontends.onnx import import_onnx
    from lbdl_graph.passes.fold_parameters import fold_params

    graph = fold_params(import_onnx(path)).graph  # weights stored in the layout they are read
    feeds = random_feeds(_specs_numpy(graph), dims, seed, given)
    return dict(Interpreter(graph, training=False).run(feeds)), feeds, "numpy"


def _run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if not path.is_file():
        raise CliError(f"cannot read ONNX model {path}: no such file")
    dims = parse_bind(args.bind)
    given = load_arrays(args.input or (), args.inputs)
    if args.out is not None:
        check_output(args.out)
    t0 = time.perf_counter()
    outputs, feeds, label = run_model(path, args.backend, given, dims, args.seed)
    seconds = time.perf_counter() - t0
    print(f"{path.name} on {label} in {seconds * 1e3:.1f} ms (including loading)")
    print("inputs:")
    print(output_table(feeds))
    drawn = sorted(set(feeds) - set(given))
    if drawn:
        print(f"  (random: {', '.join(drawn)}; seed {args.seed})")
    print("outputs:")
    print(output_table(outputs))
    if args.out is not None:
        save_npz(args.out, outputs)
        print(f"wrote {args.out} ({len(outputs)} arrays)")
    return 0


def register(sub: Any) -> None:
    """Add the ``run`` verb."""
    p = sub.add_parser("run", help="run an ONNX model once and print its outputs",
                       description="Run MODEL.onnx on the NumPy interpreter or ONNX Runtime; "
                                   "inputs not given are random.")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model file")
    p.add_argument("--backend", choices=("numpy", "onnxruntime"), default="onnxruntime",
                   help="backend (default onnxruntime)")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input from a .npy file (repeatable)")
    p.add_argument("--inputs", metavar="FILE.npz", help="inputs by name from an .npz archive")
    p.add_argument("--bind", action="append", metavar="N=4",
                   help="size of a symbolic dim for random inputs (repeatable; default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--out", metavar="OUT.npz", help="save the outputs to an .npz archive")
    p.set_defaults(func=_run)
