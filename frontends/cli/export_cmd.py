"""``lbdl-graph export ZOO_MODEL -o model.onnx``: trace a zoo model and write it as ONNX.

``--level`` optimises the graph first (the inference export always folds layout ops on
parameters into stored weights, ``fold_params``, so no initializer is transposed at run time);
``--train`` exports the compiled training step instead (forward, loss, backward and Adam update
in one graph): its state (parameters, optimizer moments, step counter) are graph inputs whose
initial values are stored as overridable initializers, and each ``NAME:next`` output is the
value to feed back as ``NAME`` on the next step.
"""

from __future__ import annotations

import argparse
from typing import Any

from lbdl_graph.graph import Graph

from .common import CliError, UsageError, check_output, optimize, resolve_zoo

__all__ = ["loss_for", "register", "train_step_model"]

# tasks whose outputs are class logits (last axis) trained with cross-entropy
_CLASSIFY = ("classification", "modelling", "translation")


def loss_for(entry: Any) -> tuple[str, Any]:
    """The loss name and target spec (None: reconstruct the first input) for a zoo entry."""
    from lbdl_graph.frontends.trace import InputSpec

    if len(entry.outputs) != 1:
        raise CliError(f"export --train needs a single-output model; {entry.name} has outputs "
                       f"{list(entry.outputs)}")
    (shape,) = entry.outputs.values()
    first = next(iter(entry.inputs.values()))
    if len(shape) >= 2 and any(k in entry.task for k in _CLASSIFY):
        return "cross_entropy", InputSpec(tuple(shape[:-1]), "int64", "y")
    if tuple(shape) == tuple(first.shape):
        return "mse", None
    return "mse", InputSpec(tuple(shape), "float32", "y")


def train_step_model(entry: Any, *, seed: int = 0, level: str = "O0", opset: int = 21
                     ) -> tuple[Any, Graph, Any]:
    """(ONNX model, step graph, pass report) of the compiled Adam training step of ``entry``."""
    from onnx import numpy_helper

    from lbdl_graph.backends.onnx import to_onnx
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    manual_seed(seed)
    loss, target = loss_for(entry)
    fwd = trace_loss(entry.model(), entry.inputs, target, loss, {}, training=True)
    step = make_train_step(fwd, Adam(), seed=seed)
    graph, report, _ = optimize(step.graph, level)
    model = to_onnx(graph, opset=opset, training=True)
    have = {t.name for t in model.graph.initializer}
    model.graph.initializer.extend(numpy_helper.from_array(v, k)
                                   for k, v in step.initial_state.items() if k not in have)
    return model, graph, report


def _generation(args: argparse.Namespace, entry: Any) -> int:
    """``--generation``: the prefill/decode bundle of a causal language model."""
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.generation import trace_generation
    from lbdl_graph.frontends.generation.bundle import export_generation
    from lbdl_graph.frontends.generation.tokenizer import Tokenizer

    out = check_output(args.output, mkdir=True)
    manual_seed(args.seed)
    model = entry.model()
    if args.checkpoint is not None:
        from lbdl_graph.frontends.training.checkpoint import load_checkpoint

        state, _ = load_checkpoint(args.checkpoint)
        model.load_state_dict(state)
    graphs = trace_generation(model, shared_cache=args.shared_cache)
    tok = (Tokenizer.load(args.tokenizer) if args.tokenizer is not None
           else Tokenizer.bytes_only() if graphs.vocab_size >= 257 else None)
    export_generation(graphs, out, tokenizer=tok, precision=args.precision,
                      quantize=args.quantize, opset=args.opset)
    print(f"{entry.name} generation bundle ({args.precision}"
          f"{', ' + args.quantize if args.quantize else ''}"
          f"{', shared in-place KV cache' if graphs.shared else ''}): {len(graphs.layers)} "
          f"cached attention layers, vocabulary {graphs.vocab_size}, context {graphs.context}")
    for f in sorted(out.iterdir()):
        if f.is_file():
            print(f"  {f.name} ({f.stat().st_size:,} bytes)")
    if tok is None:
        print("  (no tokenizer: the vocabulary is too small for bytes; pass --tokenizer FILE)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from lbdl_graph.backends.onnx import save_onnx, to_onnx

    entry = resolve_zoo(args.model, args.config)
    if args.generation:
        return _generation(args, entry)
    for flag in ("tokenizer", "quantize", "checkpoint"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag} only applies with --generation")
    if args.shared_cache:
        raise UsageError("--shared-cache only applies with --generation")
    out = check_output(args.output)
    if args.train:
        model, graph, report = train_step_model(entry, seed=args.seed, level=args.level,
                                                opset=args.opset)
        what = "training step"
    else:
        from lbdl_graph.frontends import manual_seed

        manual_seed(args.seed)
        graph, report, _ = optimize(entry.trace(), args.level, inference=True)
        model = to_onnx(graph, opset=args.opset, training=False)
        what = "inference graph"
    save_onnx(model, out, provenance=not args.strip_provenance)
    if report.passes:
        print(report)
    ins = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs[:4])
    more = f", ... (+{len(graph.inputs) - 4} inputs)" if len(graph.inputs) > 4 else ""
    outs = ", ".join(f"{v.name}: {v.type}" for v in graph.outputs[:4])
    more_out = f", ... (+{len(graph.outputs) - 4})" if len(graph.outputs) > 4 else ""
    print(f"{entry.name} {what} ({args.level}): {len(graph.nodes)} nodes, "
          f"{len(model.graph.node)} ONNX nodes, opset {args.opset}")
    print(f"  inputs:  {ins}{more}")
    print(f"  outputs: {outs}{more_out}")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    if args.strip_provenance:
        from lbdl_graph.backends.onnx.provenance import sidecar_path

        print(f"wrote {sidecar_path(out)} (provenance kept out of the model)")
    return 0


def register(sub: Any) -> None:
    """Add the ``export`` verb."""
    p = sub.add_parser("export", help="export a zoo model (or its training step) to ONNX",
                       description="Trace a zoo model (an entry or a family name) and write it "
                                   "as an ONNX file.")
    p.add_argument("model", metavar="ZOO_MODEL", help="zoo entry (lenet_digits) or family (gpt)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx",
                   help="the ONNX file (a directory with --generation)")
    p.add_argument("--config", choices=("tiny", "default"), default=None,
                   help="the family's tiny (test-size) or default configuration")
    p.add_argument("--opset", type=int, default=21, help="ONNX opset, 17..26 (default 21)")
    p.add_argument("--level", default="O0",
                   help="optimisation level O0..O3 or comma-separated pass names (default O0)")
    p.add_argument("--train", action="store_true",
                   help="export the compiled training step (loss, gradients, Adam update)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p.add_argument("--strip-provenance", action="store_true",
                   help="leave source lines and IR names out of the model; keep them in "
                        "OUT.provenance.json beside it for error messages")
    g = p.add_argument_group("generation bundles")
    g.add_argument("--generation", action="store_true",
                   help="write a generation bundle into the directory -o: prefill.onnx, "
                        "decode.onnx (KV cache), tokenizer.json, generation_config.json")
    g.add_argument("--tokenizer", metavar="FILE",
                   help="tokenizer.json to bundle (default: UTF-8 bytes when the vocabulary "
                        "has room)")
    g.add_argument("--precision", choices=("float32", "float16", "bfloat16"),
                   default="float32", help="weights, activations and cache (default float32)")
    g.add_argument("--quantize", choices=("q8_0", "q4_0", "q4_1", "int8"), default=None,
                   help="weight-only quantisation of the matmuls")
    g.add_argument("--checkpoint", metavar="FILE", help="trained weights (safetensors)")
    g.add_argument("--shared-cache", action="store_true",
                   help="decode over one preallocated KV buffer per layer written in place "
                        "(ONNX Runtime's GroupQueryAttention, CPU; float32 with optional "
                        "--quantize; unpadded prompts) instead of the standard-ops Concat cache")
    p.set_defaults(func=_run)
