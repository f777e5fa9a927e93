"""Static pictures of real models: size, overlaps, label size and drawing time of `viz` SVGs.

Per model (``gpt2_small``, ``resnet50``, ``vit_b16`` from the zoo, and ``bert``: a BERT-base
built by transformers from ``BertConfig()`` with random weights, exported by
``torch.onnx.export`` (TorchScript exporter, fixed shape 1 x 128) and imported by our ONNX
importer) the default picture (collapsed by scope to at most about 60 boxes, laid out by
Graphviz dot) gives:

* ``<model>_svg_long_side_px``, ``<model>_svg_bytes``, ``<model>_svg_boxes``,
  ``<model>_svg_overlaps`` (pairs of boxes that intersect), ``<model>_svg_min_font_px``
  (the smallest text at 100 % zoom), all measured on dot's SVG by
  :mod:`lbdl_graph.frontends.inspect.svg_geometry`;
* ``<model>_svg_s``: seconds from the graph to the SVG text (collapse, DOT, dot), the median of
  ``--repeat`` runs. Tracing or importing the model is not included.

``gpt2_small_full_depth_s`` lays out GPT-2 small with every node its own box.
Targets: long side <= 4,000 px, <= 1 MB, no overlaps, labels >= 9 px, drawn in < 2 s; the full
depth picture in < 20 s. ``bert`` is skipped (with a note) without torch or transformers.

Each figure comes from one function in ``MEASUREMENTS``; another figure is one more function
``(Context) -> dict`` appended there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.inspect import find_engine, parse_svg, to_dot, to_svg
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.graph import Graph

Figures = dict[str, Any]
ZOO_MODELS = ("gpt2_small", "resnet50", "vit_b16")


@dataclass
class Context:
    """What the measurements share: options, graphs made once, notes for skipped figures."""

    repeat: int
    bert_onnx: str | None
    graphs: dict[str, Graph] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def zoo(self, name: str) -> Graph:
        """The zoo model ``name`` traced (once)."""
        if name not in self.graphs:
            from lbdl_graph.passes.fold_parameters import fold_params

            manual_seed(0)  # what `viz` draws: weight layouts folded into stored weights
            self.graphs[name] = fold_params(ZOO[name].trace()).graph
        return self.graphs[name]


def bert_graph(path: str | None) -> Graph:
    """BERT-base (random weights) exported by torch's TorchScript exporter, then imported."""
    from lbdl_graph.frontends.onnx import import_onnx

    if path is not None and Path(path).is_file():
        return import_onnx(path)
    import torch
    from transformers import BertConfig, BertModel

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(BertConfig(), add_pooling_layer=False).eval()

        def forward(self, ids: Any) -> Any:
            mask = torch.ones_like(ids)
            return self.bert(input_ids=ids, attention_mask=mask, return_dict=False)[0]

    torch.manual_seed(0)
    ids = torch.zeros((1, 128), dtype=torch.long)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(path) if path is not None else Path(tmp) / "bert.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, not gone
            torch.onnx.export(Encoder(), (ids,), str(out), input_names=["input_ids"],
                              output_names=["last_hidden_state"], opset_version=17,
                              dynamo=False)
        return import_onnx(out)


def picture(name: str, graph: Graph, repeat: int) -> Figures:
    """The figures of the default picture of ``graph``."""
    times = []
    svg = ""
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        svg = to_svg(graph)
        times.append(time.perf_counter() - t0)
    geo = parse_svg(svg)
    return {f"{name}_svg_long_side_px": round(geo.long_side_px),
            f"{name}_svg_bytes": geo.bytes,
            f"{name}_svg_boxes": len(geo.boxes),
            f"{name}_svg_overlaps": len(geo.overlaps()),
            f"{name}_svg_min_font_px": round(geo.min_font_px, 2),
            f"{name}_svg_s": round(statistics.median(times), 3),
            f"{name}_nodes": len(graph.nodes)}


def zoo_pictures(ctx: Context) -> Figures:
    """Default pictures of the zoo models."""
    out: Figures = {}
    for name in ZOO_MODELS:
        out.update(picture(name, ctx.zoo(name), ctx.repeat))
    return out


def bert_picture(ctx: Context) -> Figures:
    """The default picture of the PyTorch-exported BERT (skipped without torch/transformers)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        ctx.notes.append(f"bert skipped: {e}")
        return {}
    from lbdl_graph.errors import LbdlError

    graph = bert_graph(ctx.bert_onnx)
    try:
        return picture("bert", graph, ctx.repeat)
    except LbdlError as e:  # e.g. an importer that gives no scopes: the picture is refused
        ctx.notes.append(f"bert: {type(e).__name__}: {e}")
        return {"bert_nodes": len(graph.nodes)}


def _engine_threads(dot_text: str) -> tuple[float, int]:
    """Seconds the engine takes on ``dot_text`` and the most threads it was seen using."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([find_engine(), "-Tsvg"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = [1]

    def watch() -> None:
        while proc.poll() is None:
            try:
                seen.append(len(os.listdir(f"/proc/{proc.pid}/task")))
            except OSError:
                break
            time.sleep(0.01)

    w = threading.Thread(target=watch)
    w.start()
    proc.communicate(dot_text.encode())
    w.join()
    return time.perf_counter() - t0, max(seen)


def full_depth(ctx: Context) -> Figures:
    """GPT-2 small with every node its own box: layout time, size and overlaps."""
    g = ctx.zoo("gpt2_small")
    t0 = time.perf_counter()
    svg = to_svg(g, depth=10**6, max_boxes=10**6, timeout=600)
    dt = time.perf_counter() - t0
    geo = parse_svg(svg)
    _, threads = _engine_threads(to_dot(g, depth=10**6, max_boxes=10**6))
    return {"gpt2_small_full_depth_s": round(dt, 3),
            "gpt2_small_full_depth_boxes": len(geo.boxes),
            "gpt2_small_full_depth_overlaps": len(geo.overlaps()),
            "gpt2_small_full_depth_long_side_px": round(geo.long_side_px),
            "engine_threads_max": threads}


def train_explore(ctx: Context) -> Figures:
    """``explore --out`` of the GPT-2 small training step (forward, backward, Adam)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from explore_time import compile_step, time_explore

    step, build_s = compile_step(ZOO["gpt2_small"])
    res = time_explore(step, "gpt2_small_train", ctx.repeat)
    return {"gpt2_small_train_explore_s": res["explore_s"],
            "gpt2_small_train_nodes": res["nodes"], "gpt2_small_train_build_s": round(build_s, 3)}


MEASUREMENTS: list[Callable[[Context], Figures]] = [zoo_pictures, bert_picture, full_depth,
                                                    train_explore]


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed picture")
    parser.add_argument("--bert-onnx", metavar="FILE", default=None,
                        help="the exported BERT: read it if it exists, else write it there")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ctx = Context(args.repeat, args.bert_onnx)
    results: Figures = {"engine": Path(find_engine()).name, "threads_python": 1,
                        "cpu_count": os.cpu_count()}
    for measure in MEASUREMENTS:
        results.update(measure(ctx))
    if ctx.notes:
        results["notes"] = ctx.notes
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for k, v in results.items():
        print(f"{k:38s} {v}")


if __name__ == "__main__":
    main()
