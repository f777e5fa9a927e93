"""Model merging in parameter space (book section 8.4): task arithmetic and TIES.

Fine-tuned versions θ_t of one base θ are combined through their task vectors τ_t = θ_t - θ:

* task arithmetic (Ilharco et al. 2022): ``θ + Σ_t λ_t τ_t``; a negative λ_t subtracts a task.
* TIES (Yadav et al. 2023): trim each τ_t to its top-``density`` fraction of entries by magnitude
  (over the whole task vector, or per tensor), elect a sign per entry as the sign of the summed
  trimmed vectors (the side with more mass), then average only the trimmed entries that agree
  with it (a disjoint mean; entries that none keep stay at the base) and add λ times the result.

Parameter sets are ``name -> array`` mappings and must match the base exactly (names, shapes,
dtypes: a mismatch raises a typed error listing them). Float parameters are merged, computing in
float64 and rounding once to their dtype; integer ones (counters, codes) must be identical.
:func:`merge_graphs` does the same for graphs of one structure (op sequence, parameter names and
types) and returns the base graph with the merged parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lbdl_graph.errors import DTypeError, GraphError, LbdlError, OpError, ShapeError
from lbdl_graph.graph import Graph

__all__ = ["METHODS", "add_task_vectors", "check_compatible", "merge_graphs", "task_arithmetic",
           "task_vector", "ties_merge"]

ParamSet = Mapping[str, np.ndarray]
METHODS = ("task_arithmetic", "ties")


def _short(items: Sequence[str], k: int = 8) -> str:
    return f"{list(items[:k])}{f' and {len(items) - k} more' if len(items) > k else ''}"


def check_compatible(base: ParamSet, others: Sequence[ParamSet],
                     labels: Sequence[str] | None = None) -> None:
    """Raise unless every set has the base's names, shapes and dtypes: GraphError for other
    names (a different architecture), else ShapeError, else DTypeError, listing every mismatch
    per set."""
    labels = list(labels or [f"model {i}" for i in range(len(others))])
    problems: list[tuple[type[LbdlError], str]] = []
    for label, ps in zip(labels, others, strict=True):
        missing = sorted(set(base) - set(ps))
        extra = sorted(set(ps) - set(base))
        if missing or extra:
            what = [f"missing {_short(missing)}" if missing else "",
                    f"unexpected {_short(extra)}" if extra else ""]
            problems.append((GraphError, f"{label} has other parameters than the base (a "
                             f"different architecture?): {'; '.join(w for w in what if w)}"))
            continue
        common = sorted(base)
        shapes = [f"{n} {list(np.shape(ps[n]))} vs base {list(np.shape(base[n]))}"
                  for n in common if np.shape(ps[n]) != np.shape(base[n])]
        if shapes:
            problems.append((ShapeError, f"{label}: shapes differ: {_short(shapes)}"))
            continue
        dts = [f"{n} {np.asarray(ps[n]).dtype} vs base {np.asarray(base[n]).dtype}"
               for n in common if np.asarray(ps[n]).dtype != np.asarray(base[n]).dtype]
        if dts:
            problems.append((DTypeError, f"{label}: dtypes differ: {_short(dts)}"))
    if problems:
        order = (GraphError, ShapeError, DTypeError)
        cls = min((c for c, _ in problems), key=order.index)
        raise cls("cannot merge: " + " | ".join(m for _, m in problems), hint=_MERGE_HINT[cls])


_MERGE_HINT: dict[type[LbdlError], str] = {
    GraphError: "merge only models fine-tuned from this base (same architecture and parameter "
                "names); for a fine-tune with extra adapters (LoRA), fold them into the weights "
                "first, or rename the parameters to the base's names",
    ShapeError: "the models share names but not sizes: re-export each fine-tune from the same "
                "base configuration (same widths, vocabulary and layers)",
    DTypeError: "cast every model to the base's dtypes before merging (e.g. dequantise an "
                "int8 model or re-export it in float32)",
}


def _frozen_ints(base: ParamSet, fts: Sequence[ParamSet]) -> None:
    for name, a in base.items():
        if np.asarray(a).dtype.kind != "f":
            for i, ps in enumerate(fts):
                if not np.array_equal(ps[name], a):
                    raise DTypeError(f"cannot merge non-float parameter '{name}' "
                                     f"({np.asarray(a).dtype}): model {i} changed it")


def task_vector(base: ParamSet, finetuned: ParamSet) -> dict[str, np.ndarray]:
    """τ = θ_ft - θ_base for every float parameter (float64, exact for float32 inputs)."""
    check_compatible(base, [finetuned], ["finetuned"])
    _frozen_ints(base, [finetuned])
    return {n: np.asarray(finetuned[n], np.float64) - np.asarray(a, np.float64)
            for n, a in base.items() if np.asarray(a).dtype.kind == "f"}


def _weights(weights: float | Sequence[float], n: int, what: str) -> list[float]:
    if isinstance(weights, int | float | np.floating | np.integer):
        return [float(weights)] * n
    ws = [float(w) for w in weights]
    if len(ws) != n:
        raise ShapeError(f"{what}: {len(ws)} weights for {n} fine-tuned models")
    return ws


def _apply(base: ParamSet, delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """θ + Δ rounded once to each parameter's dtype; non-float parameters are copied."""
    out: dict[str, np.ndarray] = {}
    for n, a in base.items():
        a = np.asarray(a)
        out[n] = (a.astype(np.float64) + delta[n]).astype(a.dtype) if n in delta else a.copy()
    return out


def add_task_vectors(params: ParamSet, vectors: Sequence[Mapping[str, np.ndarray]],
                     weights: float | Sequence[float] = 1.0) -> dict[str, np.ndarray]:
    """θ + Σ_t λ_t τ_t for task vectors from :func:`task_vector` (Σ in float64, one rounding);
    every vector must cover exactly the float parameters of ``params``."""
    if not vectors:
        raise OpError("add_task_vectors: no task vectors given")
    lam = _weights(weights, len(vectors), "add_task_vectors")
    floats = {n: np.asarray(a) for n, a in params.items() if np.asarray(a).dtype.kind == "f"}
    check_compatible({n: np.zeros(a.shape) for n, a in floats.items()},
                     [{n: np.asarray(t, np.float64) for n, t in v.items()} for v in vectors],
                     [f"task vector {i}" for i in range(len(vectors))])
    delta = {n: sum((w * np.asarray(v[n], np.float64) for w, v in zip(lam, vectors,
                                                                      strict=True)),
                    np.zeros(a.shape)) for n, a in floats.items()}
    return _apply(params, delta)


def task_arithmetic(base: ParamSet, finetuned: Sequence[ParamSet],
                    weights: float | Sequence[float] = 1.0) -> dict[str, np.ndarray]:
    """θ + Σ_t λ_t τ_t with one λ for all tasks or one per task (negative: subtract a task)."""
    fts = list(finetuned)
    if not fts:
        raise OpError("task_arithmetic: no fine-tuned models given")
    return add_task_vectors(base, [task_vector(base, ft) for ft in fts], weights)


def _trim(tau: Mapping[str, np.ndarray], density: float, per_tensor: bool
          ) -> dict[str, np.ndarray]:
    """Keep the entries whose magnitude is among the top ``density`` fraction (ties at the
    threshold are kept), zero the rest."""
    def threshold(mags: np.ndarray) -> float:
        k = int(np.ceil(density * mags.size))
        return float(np.partition(mags, mags.size - k)[mags.size - k]) if k else np.inf

    if per_tensor:
        return {n: np.where(np.abs(t) >= threshold(np.abs(t).ravel()), t, 0.0)
                for n, t in tau.items()}
    flat = np.concatenate([np.abs(t).ravel() for t in tau.values()]) if tau else np.zeros(0)
    thr = threshold(flat) if flat.size else np.inf
    return {n: np.where(np.abs(t) >= thr, t, 0.0) for n, t in tau.items()}


def ties_merge(base: ParamSet, finetuned: Sequence[ParamSet], density: float = 0.2,
               lam: float = 1.0, *, per_tensor: bool = False) -> dict[str, np.ndarray]:
    """TIES merging: trim each task vector to its top ``density`` fraction by magnitude (over
    all parameters, or ``per_tensor``), elect the sign of Σ_t trimmed τ_t per entry, average the
    trimmed entries that share it, and return θ + lam · that mean."""
    fts = list(finetuned)
    if not fts:
        raise OpError("ties_merge: no fine-tuned models given")
    if not 0.0 < density <= 1.0:
        raise ShapeError(f"ties_merge: density must be in (0, 1], got {density}")
    trimmed = [_trim(task_vector(base, ft), density, per_tensor) for ft in fts]
    delta: dict[str, np.ndarray] = {}
    for n in trimmed[0]:
        stack = np.stack([t[n] for t in trimmed])  # (T, *shape)
        sign = np.sign(stack.sum(axis=0))
        agree = (np.sign(stack) == sign) & (stack != 0)
        count = agree.sum(axis=0)
        total = np.where(agree, stack, 0.0).sum(axis=0)
        delta[n] = lam * np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return _apply(base, delta)


def _signature(g: Graph) -> list[str]:
    """The op sequence of a graph (its structure, with the parameters checked separately)."""
    return [n.op.name for n in g.nodes]


def merge_graphs(base: Graph, graphs: Sequence[Graph], method: str = "task_arithmetic",
                 **options: float | Sequence[float] | bool) -> Graph:
    """Merge fine-tuned graphs of the base's structure (same op sequence and parameter names,
    shapes and dtypes) with ``method`` ("task_arithmetic": ``weights=``; "ties": ``density=``,
    ``lam=``, ``per_tensor=``); returns the base graph with the merged parameters."""
    if method not in METHODS:
        raise OpError(f"unknown merge method {method!r}; use one of {METHODS}")
    allowed = {"task_arithmetic": {"weights"}, "ties": {"density", "lam", "per_tensor"}}[method]
    if set(options) - allowed:
        raise OpError(f"merge_graphs: unknown option(s) {sorted(set(options) - allowed)} for "
                      f"method {method!r}; use {sorted(allowed)}")
    if not graphs:
        raise OpError("merge_graphs: no fine-tuned graphs given")
    ops_b = _signature(base)
    for g in graphs:
        ops_g = _signature(g)
        if ops_g != ops_b:
            i = next((i for i, (a, c) in enumerate(zip(ops_b, ops_g, strict=False)) if a != c),
                     min(len(ops_b), len(ops_g)))
            raise GraphError(f"cannot merge graph '{g.name}' into '{base.name}': different "
                             f"structure ({len(ops_g)} vs {len(ops_b)} nodes; node {i} is "
                             f"{ops_g[i] if i < len(ops_g) else 'missing'} vs "
                             f"{ops_b[i] if i < len(ops_b) else 'missing'})")
    check_compatible(base.param_arrays(), [g.param_arrays() for g in graphs],
                     [f"graph '{g.name}'" for g in graphs])
    fts = [g.param_arrays() for g in graphs]
    if method == "ties":
        merged = ties_merge(base.param_arrays(), fts, **options)  # type: ignore[arg-type]
    else:
        merged = task_arithmetic(base.param_arrays(), fts, **options)
    return base.with_params(merged)
