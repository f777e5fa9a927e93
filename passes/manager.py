"""The pass manager: named passes, optimisation levels O0-O3 and a checked pipeline runner.

``run_passes(graph, "O2")`` runs a level, ``run_passes(graph, ["simplify", my_pass])`` a list
of pass names or callables. Levels: O0 runs nothing; O1 cleans up (folding, simplification,
CSE, DCE); O2 adds the pattern fusions (GELU, LayerNorm, attention, batch-norm folding, linear,
conv); O3 adds elementwise-chain fusion and memory-planning hints.

Inference graphs also get ``fold_params`` (layout ops on parameters stored as new weights, see
:mod:`~lbdl_graph.passes.fold_parameters`), first in the pipeline: with ``inference=True`` it is
prepended to any level or list (O0 included), and by default (``inference=None``) to the levels
O1-O3 when the graph says it is an inference graph (traced in evaluation mode:
``metadata["training"]`` is False). Training graphs and compiled training steps never get it.

After each pass the verifier runs (``verify=True``) and, with ``check_translation``, both
graphs run on the same random inputs and must agree; a failure is a :class:`PassError`
(:class:`TranslationError`) naming the pass. The result carries a :class:`PipelineReport`: per
pass, the time, node counts per op before and after, and how often each rule fired.

Passes do not import backends, so the translation check takes an ``executor`` (a function
``(graph, inputs) -> outputs by name``), for example ``lbdl_graph.backends.numpy.run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph.errors import LbdlError
from lbdl_graph.graph import Graph
from lbdl_graph.verify import verify as verify_graph

from .base import Pass, PassResult
from .constant_causal_masks import constant_causal_masks
from .eliminate_common_subexpressions import eliminate_common_subexpressions
from .eliminate_dead_code import eliminate_dead_code
from .fold_batch_norm import fold_batch_norm
from .fold_constants import fold_constants
from .fold_parameters import fold_params, is_training_graph
from .fuse_attention import fuse_attention
from .fuse_conv import fuse_conv
from .fuse_elementwise import fuse_elementwise
from .fuse_gelu import fuse_gelu
from .fuse_layer_norm import fuse_layer_norm
from .fuse_linear import fuse_linear
from .plan_memory import plan_memory
from .simplify import simplify
from .simplify_shapes import simplify_shapes

__all__ = [
    "PASSES",
    "PIPELINES",
    "Executor",
    "PassError",
    "PassReport",
    "PipelineReport",
    "PipelineResult",
    "TranslationError",
    "is_inference_graph",
    "random_inputs",
    "resolve_passes",
    "run_passes",
]

log = logging.getLogger("lbdl_graph.passes")

Executor = Callable[[Graph, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

PASSES: dict[str, Pass] = {
    "fold_constants": fold_constants,
    "fold_params": fold_params,
    "simplify": simplify,
    "simplify_shapes": simplify_shapes,
    "eliminate_common_subexpressions": eliminate_common_subexpressions,
    "eliminate_dead_code": eliminate_dead_code,
    "constant_causal_masks": constant_causal_masks,
    "fuse_gelu": fuse_gelu,
    "fuse_layer_norm": fuse_layer_norm,
    "fuse_attention": fuse_attention,
    "fold_batch_norm": fold_batch_norm,
    "fuse_linear": fuse_linear,
    "fuse_conv": fuse_conv,
    "fuse_elementwise": fuse_elementwise,
    "plan_memory": plan_memory,
}

_CLEANUP = ("fold_constants", "simplify", "simplify_shapes", "eliminate_common_subexpressions",
            "eliminate_dead_code")
# fusion can leave equal nodes behind (the key transposes of attention): merge them last
_FUSION = ("fuse_gelu", "fuse_layer_norm", "fuse_attention", "fold_batch_norm", "fuse_linear",
           "fuse_conv", "eliminate_common_subexpressions")
PIPELINES: dict[str, tuple[str, ...]] = {
    "O0": (),
    "O1": _CLEANUP,
    "O2": _CLEANUP + _FUSION,
    "O3": _CLEANUP + _FUSION + ("fuse_elementwise", "plan_memory"),
}


class PassError(LbdlError):
    """An unknown pass or level, or a pass that produced an invalid graph."""


class TranslationError(PassError):
    """A pass changed what the graph computes (the translation check caught it)."""


@dataclass(frozen=True)
class PassReport:
    """What one pass did: time, whether it changed the graph, rule counts and op counts."""

    name: str
    seconds: float
    changed: bool
    stats: Mapping[str, int]
    ops_before: Mapping[str, int]
    ops_after: Mapping[str, int]

    @property
    def nodes_before(self) -> int:
        """Node count before the pass."""
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        """Node count after the pass."""
        return sum(self.ops_after.values())

    def op_changes(self) -> dict[str, tuple[int, int]]:
        """Ops whose node count changed: name -> (before, after)."""
        names = sorted(set(self.ops_before) | set(self.ops_after))
        return {n: (self.ops_before.get(n, 0), self.ops_after.get(n, 0)) for n in names
                if self.ops_before.get(n, 0) != self.ops_after.get(n, 0)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "seconds": self.seconds, "changed": self.changed,
                "stats": dict(self.stats), "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after,
                "op_changes": {k: list(v) for k, v in self.op_changes().items()}}


@dataclass(frozen=True)
class PipelineReport:
    """The per-pass reports of one pipeline run; ``str()`` is a readable table."""

    graph: str
    passes: tuple[PassReport, ...]

    @property
    def seconds(self) -> float:
        """Total time of the passes (checks excluded)."""
        return sum(p.seconds for p in self.passes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"graph": self.graph, "seconds": self.seconds,
                "passes": [p.to_dict() for p in self.passes]}

    def __str__(self) -> str:
        if not self.passes:
            return f"pipeline on {self.graph}: no passes"
        first, last = self.passes[0], self.passes[-1]
        lines = [f"pipeline on {self.graph}: {first.nodes_before} -> {last.nodes_after} nodes "
                 f"in {self.seconds * 1e3:.2f} ms",
                 f"  {'pass':<34}{'ms':>8}  {'nodes':<12}rules fired / op counts"]
        for p in self.passes:
            rules = ", ".join(f"{k}={v}" for k, v in sorted(p.stats.items())) or "-"
            nodes = f"{p.nodes_before} -> {p.nodes_after}"
            lines.append(f"  {p.name:<34}{p.seconds * 1e3:>8.2f}  {nodes:<12}{rules}")
            changes = ", ".join(f"{k} {a}->{b}" for k, (a, b) in p.op_changes().items())
            if changes:
                lines.append(f"  {'':<56}{changes}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineResult(PassResult):
    """A :class:`PassResult` (stats as ``"pass.rule"``) plus the pipeline's report."""

    report: PipelineReport


def _name(p: Pass) -> str:
    return getattr(p, "__name__", type(p).__name__)


def is_inference_graph(graph: Graph) -> bool:
    """True for a graph traced in evaluation mode (``metadata["training"]`` is False)."""
    return graph.metadata.get("training") is False and not is_training_graph(graph)


def resolve_passes(passes: str | Sequence[str | Pass], *,
                   inference: bool = False) -> list[tuple[str, Pass]]:
    """Turn a level ('O2'), a pass name or a list of names and callables into (name, pass).

    ``inference`` puts ``fold_params`` first unless the list already has it.
    """
    if isinstance(passes, str):
        passes = PIPELINES.get(passes, (passes,))
    if inference and "fold_params" not in passes and fold_params not in passes:
        passes = ("fold_params", *passes)
    out: list[tuple[str, Pass]] = []
    for p in passes:
        if callable(p):
            out.append((_name(p), p))
        elif p in PASSES:
            out.append((p, PASSES[p]))
        else:
            raise PassError(f"unknown pass or level {p!r}; levels: {', '.join(PIPELINES)}; "
                            f"passes: {', '.join(PASSES)}")
    return out


def random_inputs(graph: Graph, *, dims: Mapping[str, int] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays for the graph's inputs; symbolic dims are bound to ``dims`` or 3.

    Floats are standard normal, integers in [0, 2) (safe as indices), bools random.
    """
    rng = np.random.default_rng(seed)
    sizes = dict(dims or {})
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        shape = [d if isinstance(d, int) else sizes.setdefault(d, 3) for d in v.shape]
        dt = v.dtype
        if dt.is_float:
            arr = rng.standard_normal(shape).astype(dt.numpy)
        elif dt.is_bool:
            arr = rng.random(shape) < 0.5
        else:
            arr = rng.integers(0, 2, shape).astype(dt.numpy)
        out[v.name] = np.asarray(arr)
    return out


def _compare(name: str, before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
             rtol: float, atol: float) -> None:
    if list(before) != list(after):
        raise TranslationError(f"pass {name} changed the outputs {list(before)} into "
                               f"{list(after)}")
    for out, want in before.items():
        got = np.asarray(after[out])
        want = np.asarray(want)
        if got.shape != want.shape or got.dtype != want.dtype:
            raise TranslationError(f"pass {name}: output '{out}' is {got.dtype}{list(got.shape)}"
                                   f", was {want.dtype}{list(want.shape)}")
        if want.dtype.kind in "fcV":
            g64, w64 = got.astype(np.float64), want.astype(np.float64)
            if not np.allclose(g64, w64, rtol=rtol, atol=atol, equal_nan=True):
                err = float(np.nanmax(np.abs(g64 - w64)))
                raise TranslationError(f"pass {name} changed output '{out}' (max abs "
                                       f"difference {err:.3g}, rtol={rtol}, atol={atol})")
        elif not np.array_equal(got, want):
            raise TranslationError(f"pass {name} changed output '{out}' "
                                   f"({int(np.sum(got != want))} elements differ)")


def run_passes(graph: Graph, passes: str | Sequence[str | Pass] = "O2", *, verify: bool = True,
               check_translation: bool | Executor = False,
               inputs: Mapping[str, np.ndarray] | None = None, executor: Executor | None = None,
               rtol: float = 1e-4, atol: float = 1e-5,
               inference: bool | None = None) -> PipelineResult:
    """Run a pipeline (a level name or a list of passes) and report on each pass.

    ``inference`` adds ``fold_params`` (see the module docstring): True for any pipeline,
    False never, None for the levels O1-O3 on a graph traced in evaluation mode.

    ``verify`` runs the verifier on the input and after every pass. ``check_translation``
    runs ``executor`` (or ``check_translation`` itself when it is one) on ``inputs``
    (default: :func:`random_inputs`) before and after every pass that changed the graph and
    raises :class:`TranslationError` naming the pass when the outputs differ beyond
    ``rtol``/``atol``.
    """
    if inference is None:
        inference = isinstance(passes, str) and passes in PIPELINES and passes != "O0" and \
            is_inference_graph(graph)
    steps = resolve_passes(passes, inference=inference)
    if callable(check_translation):
        executor, check_translation = check_translation, True
    if check_translation and executor is None:
        raise PassError("check_translation needs executor= (e.g. lbdl_graph.backends.numpy.run)"
                        "; passes do not import the backends")
    if verify:
        verify_graph(graph)
    feeds: dict[str, np.ndarray] = {}
    expected = None
    if check_translation and executor is not None:
        feeds = dict(inputs) if inputs is not None else random_inputs(graph)
        expected = executor(graph, feeds)
    reports: list[PassReport] = []
    stats: dict[str, int] = {}
    changed = False
    for name, p in steps:
        ops_before = graph.op_counts()
        t0 = time.perf_counter()
        result = p(graph)
        seconds = time.perf_counter() - t0
        if verify:
            try:
                verify_graph(result.graph)
            except LbdlError as e:
                raise PassError(f"pass {name} produced an invalid graph: {e}", node=e.node,
                                op=e.op, source=e.source) from e
        if result.changed and expected is not None and executor is not None:
            _compare(name, expected, executor(result.graph, feeds), rtol, atol)
        reports.append(PassReport(name, seconds, result.changed, dict(result.stats), ops_before,
                                  result.graph.op_counts()))
        log.debug("%s: %s in %.2f ms", name, dict(result.stats), seconds * 1e3)
        for k, v in result.stats.items():
            stats[f"{name}.{k}"] = stats.get(f"{name}.{k}", 0) + v
        changed = changed or result.changed
        graph = result.graph
    return PipelineResult(graph, changed, stats, report=PipelineReport(graph.name, tuple(reports)))
