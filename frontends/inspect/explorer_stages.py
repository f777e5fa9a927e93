"""The stages a graph goes through, as one Model Explorer graph collection with overlays.

:func:`build_stages` runs a pipeline one pass at a time and keeps: the graph as traced, the
graph after each pass that changed it (the last one is the final graph), an optional
comparison stage, the training step and the exported ONNX model as ONNX Runtime optimises it.
:func:`build_bundle` converts them (:mod:`.explorer_graph`) and computes the overlays
(:mod:`.explorer_data`): parameters, MACs, output bytes, activation memory kept for backward,
measured time and the pass diff of each pass and of the comparison. :func:`write_bundle` writes
the graph JSON and one node-data JSON per overlay, files any Model Explorer loads.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbdl_graph.errors import LbdlError
from lbdl_graph.graph import Graph

from .common import Bindings
from .diff import graph_diff
from .explorer_data import (
    Results,
    bytes_values,
    diff_data,
    diff_results,
    diff_rules,
    mac_values,
    node_data,
    numpy_time_values,
    ort_time_values,
    param_values,
    results_data,
    saved_for_backward,
)
from .explorer_graph import me_collection, me_graph
from .explorer_onnx import onnx_me_graph

__all__ = [
    "Bundle",
    "ExplorerError",
    "Stage",
    "build_bundle",
    "build_stages",
    "final_stage",
    "write_bundle",
]


class ExplorerError(LbdlError):
    """The explorer cannot show what was asked (no loss to train, no free port, ...)."""


@dataclass
class Stage:
    """One graph of the collection: an IR graph or an ONNX model, and how it was made."""

    id: str  # "03 fuse_attention": the graph id; ids sort in stage order
    kind: str  # traced, pass, compare, train, onnx
    graph: Graph | None = None
    onnx: Any = None  # an onnx ModelProto for kind "onnx"
    rules: dict[str, str] = field(default_factory=dict)  # node name -> pass that made it
    note: str = ""
    state: Mapping[str, Any] | None = None  # a training step's initial state
    trainable: tuple[str, ...] = ()


@dataclass
class Bundle:
    """A converted collection: its name, the graph-collection JSON, overlays and stages."""

    name: str
    collection: dict[str, Any]
    overlays: list[tuple[str, dict[str, Any]]]  # (overlay name, ModelNodeData JSON dict)
    stages: list[Stage]


def _run_pass(graph: Graph, name: str, p: Any) -> tuple[Graph, bool]:
    from lbdl_graph.passes.manager import run_passes

    res = run_passes(graph, [p], verify=True)
    return res.graph, res.changed


def _pass_names(level: str | Sequence[str]) -> Any:
    if isinstance(level, str) and "," in level:
        return [p.strip() for p in level.split(",") if p.strip()]
    return level


def build_stages(graph: Graph, level: str | Sequence[str] = "O2", *,
                 compare: str | None = None, train: Any = None, onnx: bool = True,
                 onnx_weights: bool = False) -> list[Stage]:
    """Stages of ``graph`` under ``level`` (see module doc). ``compare``: another level whose
    result is diffed against the final graph (``O0``: the traced graph). ``train``: a
    ``TrainStep`` or a compiled step graph, shown as the training step. ``onnx``: add the final
    graph exported to ONNX and optimised by ONNX Runtime (``onnx_weights``: keep its weights,
    which timing it on ORT needs; the picture does not)."""
    from lbdl_graph.passes.manager import resolve_passes

    level_name = level if isinstance(level, str) else ",".join(level)
    # inference graphs are drawn clean: layout ops on weights folded first (training graphs
    # and train steps are left alone by fold_params)
    steps = resolve_passes(_pass_names(level), inference=True)
    stages = [Stage("00 traced", "traced", graph, note="as traced")]
    at_step = [0]  # stage index after each pass prefix
    rules: dict[str, str] = {}
    g = graph
    for name, p in steps:
        before = set(g.node_map)
        g, changed = _run_pass(g, name, p)
        if changed:
            rules = {**rules, **{n: name for n in g.node_map if n not in before}}
            stages.append(Stage(f"{len(stages):02d} {name}", "pass", g, rules=dict(rules),
                                note=f"after {name}"))
        at_step.append(len(stages) - 1)
    final = stages[-1]
    final.note += f" (final {level_name})"
    final.id += f" (final {level_name})" if final.kind == "pass" else f" (= {level_name})"
    if compare is not None:
        names = [n for n, _ in resolve_passes(_pass_names(compare))]
        if names == [n for n, _ in steps][: len(names)]:
            stages[at_step[len(names)]].note += f" = {compare}"
            final.note += f"; compared with {compare}"
        else:
            c = graph
            crules: dict[str, str] = {}
            for name, p in resolve_passes(_pass_names(compare)):
                before = set(c.node_map)
                c, changed = _run_pass(c, name, p)
                crules.update({n: name for n in c.node_map if n not in before})
            stages.append(Stage(f"{len(stages):02d} {compare}", "compare", c, rules=crules,
                                note=f"compared with the final graph ({compare})"))
    if train is not None:
        step_graph = getattr(train, "graph", train)
        info = getattr(train, "info", None)
        stages.append(Stage(f"{len(stages):02d} train step", "train", step_graph,
                            note="training step: forward, loss, backward, optimizer update",
                            state=getattr(train, "initial_state", None),
                            trainable=tuple(info.params) if info is not None else ()))
    if onnx:
        try:
            model = ort_optimized(final.graph, weights=onnx_weights)  # type: ignore[arg-type]
            stages.append(Stage(f"{len(stages):02d} onnxruntime", "onnx", onnx=model,
                                note="exported to ONNX, as ONNX Runtime optimises it"))
        except (LbdlError, OSError, RuntimeError, ValueError) as e:
            print(f"note: no ONNX Runtime stage: {type(e).__name__}: {e}")
    return stages


def final_stage(stages: Sequence[Stage]) -> Stage:
    """The final graph of the pipeline: the last traced or pass stage (else the first stage)."""
    passes = [s for s in stages if s.kind in ("traced", "pass")]
    if not passes and not stages:
        raise ExplorerError("nothing to show: no stages")
    return passes[-1] if passes else stages[0]


def compare_index(stages: Sequence[Stage], compare: str) -> int:
    """Index of the stage ``compare`` names (a 'compare' stage or one whose note has '= X')."""
    for i, s in enumerate(stages):
        if s.kind == "compare" or s.note.endswith(f"= {compare}") or f"= {compare} " in s.note:
            return i
    return 0


def ort_optimized(graph: Graph, *, level: str = "all", weights: bool = True) -> Any:
    """``graph`` exported to ONNX (evaluation mode) and optimised by ONNX Runtime
    (``optimized_model_filepath``), as an ``onnx.ModelProto``; without ``weights`` the large
    initializers (over 1 KiB) are left out of memory (their names, types and shapes stay)."""
    import onnx
    import onnxruntime as ort

    from lbdl_graph.backends.onnx import save_onnx

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory() as tmp:
        src = save_onnx(graph, os.path.join(tmp, "model.onnx"), training=False)
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[level]
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimized.data")
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath, load_external_data=weights)


def _note(notes: dict[str, dict[str, list[tuple[str, str]]]], sid: str, graph: Graph,
          marks: Mapping[str, str], key: str) -> None:
    per = notes.setdefault(sid, {})
    for name, text in marks.items():
        if name in graph.node_map:
            per.setdefault(name, []).append((key, text))


def _diffs(stages: Sequence[Stage], compare: str | None
           ) -> tuple[list[tuple[str, Any]], dict[str, dict[str, list[tuple[str, str]]]]]:
    """The diff overlays and the per-node notes they leave in the graphs' attributes.

    Two overlays cover the whole pipeline: on each stage, what its pass made (added, fused,
    changed) and what the next pass removes; a third diffs ``compare`` against the final graph.
    """
    notes: dict[str, dict[str, list[tuple[str, str]]]] = {}
    made: dict[str, Results] = {}
    removed: dict[str, Results] = {}
    passes = [s for s in stages if s.kind in ("traced", "pass")]
    for a, b in itertools.pairwise(passes):
        assert a.graph is not None and b.graph is not None
        d = graph_diff(a.graph, b.graph, b.rules)
        made[b.id] = diff_results(d, "after")
        removed[a.id] = {k: v for k, v in diff_results(d, "before").items()
                         if v["value"].startswith("removed")}
        _note(notes, b.id, b.graph, {k: str(v["value"]) for k, v in made[b.id].items()},
              f"made by this pass (vs {a.id})")
        _note(notes, a.id, a.graph, {k: str(v["value"]) for k, v in removed[a.id].items()},
              f"next pass (to {b.id})")
    overlays: list[tuple[str, Any]] = []
    if compare is not None and passes:
        final, before = passes[-1], stages[compare_index(stages, compare)]
        if before is not final and before.graph is not None and final.graph is not None:
            label = f"diff {compare} -> final"
            d = graph_diff(before.graph, final.graph, final.rules)
            overlays.append((label, diff_data(label, d, before.id, final.id)))
            marks = diff_rules(d)
            _note(notes, final.id, final.graph, marks, f"vs {compare}")
            _note(notes, before.id, before.graph,
                  {k: v for k, v in marks.items() if k not in final.graph.node_map},
                  f"vs final ({final.id})")
    overlays.insert(0, ("pass diff: made by this pass",
                        results_data("pass diff: made by this pass", made)))
    overlays.insert(0, ("pass diff: removed by the next pass",
                        results_data("pass diff: removed by the next pass", removed)))
    return overlays, notes


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block: building hundreds of thousands of small
    dicts would otherwise trigger full collections over them again and again (about a third of
    the conversion time); nothing built here is cyclic."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build_bundle(name: str, stages: Sequence[Stage], *, bindings: Bindings | None = None,
                 compare: str | None = None, time: bool = False) -> Bundle:
    """Convert ``stages`` and compute their overlays (see :func:`_build_bundle`)."""
    with paused_gc():
        return _build_bundle(name, stages, bindings=bindings, compare=compare, time=time)


def _build_bundle(name: str, stages: Sequence[Stage], *, bindings: Bindings | None = None,
                  compare: str | None = None, time: bool = False) -> Bundle:
    """Convert ``stages`` and compute their overlays (``time``: also run the final graph and the
    training step on NumPy and the ONNX Runtime stage on ORT, with the profilers on).

    Model Explorer colours by the overlay it loaded last, so the order ends with the diffs:
    MACs, parameters, output bytes, memory kept for backward, time, what the next pass removes,
    what this stage's pass made, and the comparison diff."""
    diffs, notes = _diffs(stages, compare)
    graphs = []
    macs: dict[str, dict[str, float]] = {}
    nbytes: dict[str, dict[str, float]] = {}
    params: dict[str, dict[str, float]] = {}
    for s in stages:
        if s.graph is not None:
            macs[s.id] = mac_values(s.graph, bindings)
            nbytes[s.id] = bytes_values(s.graph, bindings)
            params[s.id] = param_values(s.graph, s.trainable)
            graphs.append(me_graph(s.graph, s.id, rules=s.rules, bindings=bindings, label=s.note,
                                   trainable=s.trainable, notes=notes.get(s.id),
                                   macs=macs[s.id], out_bytes=nbytes[s.id]))
        else:
            graphs.append(onnx_me_graph(s.onnx, s.id, label=s.note))
    overlays: list[tuple[str, Any]] = [
        ("MACs", node_data("MACs", macs, "#d93025")),
        ("parameters", node_data("parameters", params, "#1a73e8")),
        ("output bytes", node_data("output bytes", nbytes, "#188038")),
    ]
    steps = [s for s in stages if s.kind == "train" and s.graph is not None]
    if steps:
        overlays.append(("saved for backward (bytes)", node_data(
            "saved for backward (bytes)",
            {s.id: saved_for_backward(s.graph, bindings) for s in steps
             if s.graph is not None}, "#9334e6")))
    if time:
        final = final_stage(stages)
        timing: dict[str, dict[str, float]] = {}
        for s in stages:
            if s is final and s.graph is not None:
                timing[s.id] = numpy_time_values(s.graph, bindings)
            elif s.kind == "train" and s.graph is not None:
                timing[s.id] = numpy_time_values(s.graph, bindings, state=s.state,
                                                 training=True)
            elif s.kind == "onnx":
                timing[s.id] = ort_time_values(s.onnx, bindings)
        overlays.append(("time (us)", node_data("time (us)", timing, "#e37400")))
    overlays += diffs
    overlays = [(label, data) for label, data in overlays if data]  # nothing to show: left out
    return Bundle(name, me_collection(name, graphs), overlays, list(stages))


def slug(text: str) -> str:
    """A file-name-safe form of an overlay name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "data"


def write_bundle(bundle: Bundle, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``<name>.json`` (the graph collection) and ``<name>.<overlay>.json`` node-data
    files into directory ``out`` (atomically each); returns the paths, graphs first."""
    from lbdl_graph.frontends.cli.common import check_output

    d = check_output(out, mkdir=True)
    with paused_gc():
        return _write(bundle, d)


def _write(bundle: Bundle, d: Path) -> list[Path]:
    import json

    from lbdl_graph.frontends.cli.common import atomic_write

    base = slug(bundle.name)
    files = [atomic_write(d / f"{base}.json", json.dumps(bundle.collection,
                                                          separators=(",", ":")))]
    used: set[str] = set()
    for label, data in bundle.overlays:
        s = slug(label)
        while s in used:
            s += "_"
        used.add(s)
        files.append(atomic_write(d / f"{base}.{s}.nodedata.json",
                                  json.dumps(data, separators=(",", ":"))))
    return files
