"""``lbdl-graph explore MODEL``: the interactive, hierarchical viewer (Google's Model Explorer).

Shows a zoo model or an ONNX file at every stage of a pipeline (``--level``, default O2): as
traced, after each pass that changed it, the final graph, the training step (``--train``) and
the exported ONNX model as ONNX Runtime optimises it, with overlays (parameters, MACs, output
bytes, activations kept for backward, ``--time``: measured time per node) and the pass diff
(``--compare O0`` opens the compared stage and the final graph side by side). The server runs on
127.0.0.1 (``--port``, the next free one when taken) until Ctrl+C; ``--out DIR`` writes the JSON
files instead, loadable by any Model Explorer (``model-explorer DIR/MODEL.json
--node_data_paths=...``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lbdl_graph.graph import Graph

from .common import (
    UsageError,
    check_output,
    is_onnx_path,
    level_arg,
    load_graph,
    parse_bind,
    resolve_zoo,
)

__all__ = ["explore_command", "register", "zoo_train_step"]

# tasks whose single output is class (or token) logits on its last axis
_CE_TASKS = ("classification", "language", "translation")


def explore_command(model: str, level: str = "O2", *, train: bool = False,
                    compare: str | None = None) -> str:
    """The command line that opens ``model`` in the explorer (printed by other verbs)."""
    parts = ["lbdl-graph", "explore", model]
    if level != "O2":
        parts += ["--level", level]
    if train:
        parts.append("--train")
    if compare:
        parts += ["--compare", compare]
    return " ".join(parts)


def zoo_train_step(entry: Any, model: Any = None) -> Any:
    """A training step (Adam) for a zoo entry: cross-entropy on the logits of classifiers and
    language models, mean squared error against a target of the output's shape otherwise."""
    from lbdl_graph.frontends import InputSpec
    from lbdl_graph.frontends.inspect.explorer import ExplorerError
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    if len(entry.outputs) != 1:
        raise ExplorerError(f"--train: zoo model {entry.name!r} has {len(entry.outputs)} "
                            f"outputs ({', '.join(entry.outputs)}); no default loss for it")
    shape = tuple(next(iter(entry.outputs.values())))
    if any(t in entry.task for t in _CE_TASKS) and isinstance(shape[-1], int):
        target, loss = InputSpec(shape[:-1], "int64"), "cross_entropy"
    else:
        target, loss = InputSpec(shape, "float32"), "mse"
    fwd = trace_loss(model if model is not None else entry.model(), dict(entry.inputs), target,
                     loss, {}, training=True)
    return make_train_step(fwd, Adam())


def _train_step(args: argparse.Namespace, graph: Graph) -> Any:
    if not args.train:
        return None
    if is_onnx_path(args.model):
        if "loss" in graph.output_names():
            from lbdl_graph.passes.optim import Adam
            from lbdl_graph.passes.train_step import make_train_step

            return make_train_step(graph, Adam())
        raise UsageError(f"--train needs a zoo model or an ONNX graph with a 'loss' output; "
                         f"{args.model} has outputs {graph.output_names()}")
    return zoo_train_step(resolve_zoo(args.model, args.config))


def _explore(args: argparse.Namespace) -> int:
    from lbdl_graph.frontends.inspect.explorer import check_port, explore, stage_summary

    dims = parse_bind(args.bind)  # fail before the work: options, output directory, port
    if args.out is not None:
        check_output(args.out, mkdir=True)
    else:
        check_port(args.port)
    t0 = time.perf_counter()
    graph = load_graph(args.model, config=args.config)
    step = _train_step(args, graph)
    name = Path(args.model).stem if is_onnx_path(args.model) else graph.name
    res = explore(graph, level=args.level, compare=args.compare, train=step, out=args.out,
                  port=args.port, browser=not args.no_browser, bindings=dims,
                  onnx=not args.no_onnx, timing=args.time, name=name)
    if isinstance(res, list):
        print(f"{name}: {len(graph.nodes)} nodes traced; wrote {len(res)} files to {args.out}/ "
              f"in {time.perf_counter() - t0:.2f} s")
        for p in res:
            print(f"  {p.name:<52} {p.stat().st_size:>12,} bytes")
        data = ",".join(str(p) for p in res[1:])
        print(f"open with: model-explorer {res[0]} --node_data_paths={data}")
        return 0
    for s in stage_summary(res.bundle):
        print(f"  {s['id']:<44} {s['nodes']:>7,} nodes  {s['note']}")
    try:  # announced inside the try, so a Ctrl+C right after the announcement still stops cleanly
        print(f"Model Explorer on {res.url}")
        print("press Ctrl+C to stop", flush=True)
        while res.thread.is_alive():
            res.thread.join(0.5)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        res.stop()
    return 0


def register(sub: Any) -> None:
    """Add the ``explore`` verb."""
    p = sub.add_parser("explore", help="interactive viewer (Model Explorer) of every stage",
                       description="Open MODEL (a zoo name or .onnx file) in Google's Model "
                                   "Explorer on 127.0.0.1: every pass stage, the training step "
                                   "and the ONNX Runtime graph, with per-node overlays and the "
                                   "pass diff; --out writes the JSON files instead.")
    p.add_argument("model", metavar="MODEL", help="zoo model name or .onnx file")
    p.add_argument("--config", choices=("tiny", "default"), default=None,
                   help="for a zoo family name: its tiny or default configuration")
    level_arg(p, "O2")
    p.add_argument("--train", action="store_true",
                   help="also show the training step (forward, loss, backward, Adam)")
    p.add_argument("--compare", metavar="LEVEL", default=None,
                   help="diff this level (O0: as traced) against the final graph, side by side")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write the graph and node-data JSON files into DIR; no server")
    p.add_argument("--port", type=int, default=8080,
                   help="server port (default 8080; the next free one when taken)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--bind", action="append", metavar="N=4",
                   help="size of a symbolic dim for MACs, bytes and timing (default 1)")
    p.add_argument("--time", action="store_true",
                   help="measure time per node (NumPy interpreter; ORT profiler for the ORT "
                        "stage)")
    p.add_argument("--no-onnx", action="store_true",
                   help="leave out the ONNX Runtime stage (export + ORT optimisation)")
    p.set_defaults(func=_explore)
