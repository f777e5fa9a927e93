"""``lbdl-graph quantize IN.onnx OUT.onnx --scheme SCHEME``: post-training quantisation.

Schemes: ``q4_0``, ``q4_1``, ``q8_0`` (llama.cpp blocks of 32 weights, run as ONNX Runtime's
MatMulNBits) and ``int8`` (per-channel symmetric weights, also for convolutions). With
``--calibration data.npz`` (int8 only) activations are quantised too (static QDQ), their ranges
calibrated on the archive's arrays (named like the model's inputs, batched along axis 0). The
quantised model is checked: both models run on ONNX Runtime on the same inputs and the largest
output difference is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    CliError,
    UsageError,
    check_output,
    load_arrays,
    numpy_eval,
    parse_bind,
    random_feeds,
)

__all__ = ["calibration_batches", "register"]

SCHEMES = ("int8", "q4_1", "q4_0", "q8_0")
METHODS = ("minmax", "percentile", "entropy")  # passes.quant.METHODS, without importing it


def calibration_batches(data: Mapping[str, np.ndarray], batch_size: int
                        ) -> list[dict[str, np.ndarray]]:
    """The arrays of a calibration archive cut into batches along axis 0."""
    if not data:
        raise CliError("the calibration archive holds no arrays")
    lengths = {k: len(v) if np.ndim(v) else 0 for k, v in data.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise CliError(f"calibration arrays must share a non-empty first (batch) axis; got "
                       f"lengths {lengths}")
    n = next(iter(lengths.values()))
    return [{k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


def _max_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    diffs = [float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
             for k in a if k in b and np.asarray(a[k]).size and np.asarray(a[k]).dtype.kind == "f"]
    return max(diffs, default=0.0)


def _run(args: argparse.Namespace) -> int:
    from lbdl_graph.backends.onnx import OrtRunner, save_onnx
    from lbdl_graph.frontends.onnx import import_onnx
    from lbdl_graph.passes.quant import quantize_static, quantize_weights

    if args.calibration is not None and args.scheme != "int8":
        raise UsageError(f"--calibration (static activation quantisation) needs --scheme int8, "
                         f"not {args.scheme}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    src = Path(args.input)
    if not src.is_file():
        raise CliError(f"cannot read ONNX model {src}: no such file")
    out = check_output(args.output)
    if out.resolve() == src.resolve():
        raise CliError(f"refusing to overwrite the input {src}; choose another output path")
    dims = parse_bind(args.bind)
    graph = import_onnx(src)
    if args.calibration is not None:
        batches = calibration_batches(load_arrays(npz=args.calibration), args.batch_size)
        result = quantize_static(graph, batches, args.method, evaluate=numpy_eval)
        what = f"static int8 (QDQ), {args.method} calibration on {len(batches)} batch(es)"
        feeds = batches[0]
    else:
        kinds = ("matmul", "linear", "conv") if args.scheme == "int8" else ("matmul", "linear")
        result = quantize_weights(graph, args.scheme, kinds=kinds,
                                  min_elements=args.min_elements)
        what = f"weight-only {args.scheme}"
        feeds = random_feeds([(v.name, v.dtype, tuple(v.shape)) for v in graph.inputs], dims)
    if not result.changed:
        raise CliError(f"{src.name}: nothing to quantise with {what} (no matmul/linear"
                       f"{'/conv' if args.scheme == 'int8' else ''} node reads a weight "
                       "parameter)")
    save_onnx(result.graph, out, training=False)
    stats = ", ".join(f"{k}={v}" for k, v in result.stats.items())
    print(f"{what}: {stats}")
    before, after = src.stat().st_size, out.stat().st_size
    print(f"size: {before:,} -> {after:,} bytes ({after / max(before, 1) * 100:.1f}%)")
    ref = OrtRunner(src).run(feeds)
    got = OrtRunner(out).run(feeds)
    print(f"onnxruntime check: max abs output diff vs the float model {_max_diff(ref, got):.3g}")
    print(f"wrote {out}")
    return 0


def register(sub: Any) -> None:
    """Add the ``quantize`` verb."""
    p = sub.add_parser("quantize", help="quantise an ONNX model (int8, q4_0, q4_1, q8_0)",
                       description="Post-training quantisation of IN.onnx into OUT.onnx.")
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("output", metavar="OUT.onnx")
    p.add_argument("--scheme", choices=SCHEMES, default="int8",
                   help="int8 (per channel) or llama.cpp blocks q4_1/q4_0/q8_0 (default int8)")
    p.add_argument("--calibration", metavar="DATA.npz",
                   help="calibration inputs: also quantise activations (static int8, QDQ)")
    p.add_argument("--method", choices=METHODS, default="minmax",
                   help="activation range calibration (default minmax)")
    p.add_argument("--batch-size", type=int, default=32, help="calibration batch size")
    p.add_argument("--min-elements", type=int, default=0,
                   help="leave weights with fewer elements in float")
    p.add_argument("--bind", action="append", metavar="N=4",
                   help="symbolic dim sizes of the random check inputs (default 1)")
    p.set_defaults(func=_run)
