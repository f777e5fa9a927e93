"""Rematerialisation (gradient checkpointing): trade recomputation for activation memory.

A graph with a backward pass (``grad`` output or a compiled training step) keeps every forward
activation that a gradient node reads alive until that read. :func:`rematerialize` keeps some,
the *checkpoints*, and recomputes the others from the nearest kept values right before their
first backward use: the forward sub-chain is cloned (``remat/<original node>``, with the
original source line) and the gradient nodes read the clones. The NumPy interpreter runs nodes
in graph order and frees a value after its last reader, so placing each clone right before its
first consumer is what lowers the real peak.

How the forward is cut (Chen et al. 2016, "Training deep nets with sublinear memory cost"):

- The *backward region* starts at the first node named ``grad/...``, ``grad:...`` or
  ``remat/...``; the nodes before it are the forward. A *stashed* value is a forward value read
  in the backward region.
- *Layers* are runs of consecutive forward nodes of one module: the name scope cut after its
  first numeric part (``encoder.layers.3.attn.q/matmul`` is in ``encoder.layers.3``); without
  scopes, every node is a layer (topological order).
- A policy picks checkpoint layers, whose outputs (values later layers read) are kept:
  ``every_k`` every k-th layer counted back from the last one, ``sqrt`` k = round(sqrt(n)),
  ``budget`` the plan with the fewest extra FLOPs whose peak activation memory fits
  ``budget_bytes``, among Chen's greedy segmentations (a checkpoint whenever the stashed bytes
  since the last one reach a threshold, for every threshold) and every k. Stashed values after
  the last checkpoint are kept: the backward needs them at once.
- Every other stashed value up to the last checkpoint is dropped. Kept regardless: graph
  outputs, small static values (keys, scalars), values that ``remat/`` clones read (so a second
  run changes nothing), and outputs of nodes reading state buffers (running statistics, the
  step counter), which are never recomputed.

Random ops are recomputed like any other, which is correct only because masks are a
counter-based hash of (key, salt, element index) (``lbdl_graph/ops/random.py``): a clone with
the same key and salt draws the same mask bit for bit; a stateful RNG would break this pass.

The result verifies and computes the same outputs bit for bit (same kernels, same inputs). Run
it after common-subexpression elimination, which would merge the clones back into the originals.
``graph.metadata["remat"]`` records the policy, layers, checkpoints and dropped values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import LbdlError, ShapeError
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.verify import verify

from .base import PassResult
from .cost import Bindings, graph_flops, peak_memory, value_bytes

__all__ = [
    "REMAT_PREFIX",
    "RematError",
    "RematReport",
    "RematResult",
    "activation_values",
    "backward_start",
    "remat_report",
    "rematerialize",
]

REMAT_PREFIX = "remat/"
_BACKWARD_PREFIXES = ("grad/", "grad:", REMAT_PREFIX)
_TINY = 64  # static values of rank <= 1 and at most this many elements are never dropped
Policy = Literal["sqrt", "every_k", "budget"]


class RematError(LbdlError):
    """A rematerialisation request that cannot be met: bad policy arguments, or a memory
    budget below what any plan reaches."""


def backward_start(graph: Graph) -> int | None:
    """Index of the first node of the backward region (None for a forward-only graph)."""
    return next((i for i, n in enumerate(graph.nodes) if n.name.startswith(_BACKWARD_PREFIXES)),
                None)


def activation_values(graph: Graph) -> set[Value]:
    """Forward activations: outputs of forward nodes and of their ``remat/`` clones."""
    start = backward_start(graph)
    fwd = graph.nodes if start is None else graph.nodes[:start]
    acts = {v for n in fwd for v in n.outputs}
    acts.update(v for n in graph.nodes if n.name.startswith(REMAT_PREFIX) for v in n.outputs)
    return acts


def _layer_key(name: str) -> str:
    scope, sep, _ = name.partition("/")
    if not sep:
        return ""
    parts = scope.split(".")
    return next((".".join(parts[: i + 1]) for i, p in enumerate(parts) if p.isdigit()), scope)


def _segment(nodes: Iterable[Node]) -> list[list[Node]]:
    """Runs of consecutive nodes of one module; one layer per node without scopes."""
    nodes = list(nodes)
    if all(_layer_key(n.name) == "" for n in nodes):
        return [[n] for n in nodes]
    return [list(run) for _, run in itertools.groupby(nodes, key=lambda n: _layer_key(n.name))]


def _state_buffers(graph: Graph) -> set[Value]:
    """Inputs and parameters holding state that the graph updates (never recompute readers)."""
    names = set(graph.metadata.get("state_updates", {}))
    ts = graph.metadata.get("train_step")
    if ts:
        names |= set(ts["state"]) - set(ts["params"])
    return {v for v in (*graph.inputs, *(p.value for p in graph.params)) if v.name in names}


def _tiny(v: Value) -> bool:
    return v.ndim <= 1 and all(isinstance(d, int) for d in v.shape) and math.prod(v.shape) <= _TINY


@dataclass
class _Analysis:
    """The forward / backward split of a graph and its layers."""

    graph: Graph
    start: int
    layers: list[list[Node]]
    layer_of: dict[Value, int]  # forward value -> layer index
    stashed: list[Value]  # forward values read in the backward region, in forward order
    outputs: list[list[Value]]  # per layer: values read by the forward of later layers
    recomputable: set[Node]
    pinned: set[Value]  # values read by existing remat clones


def _analyse(graph: Graph) -> _Analysis | None:
    start = backward_start(graph)
    if start is None or start == 0:
        return None
    forward = graph.nodes[:start]
    layers = _segment(forward)
    layer_of = {v: j for j, layer in enumerate(layers) for n in layer for v in n.outputs}
    node_layer = {n: j for j, layer in enumerate(layers) for n in layer}
    position = {n: i for i, n in enumerate(graph.nodes)}
    stashed: list[Value] = []
    outputs: list[list[Value]] = [[] for _ in layers]
    for n in forward:
        for v in n.outputs:
            users = graph.consumers.get(v, ())
            if any(position[u] >= start for u in users):
                stashed.append(v)
            if any(u in node_layer and node_layer[u] > layer_of[v] for u in users):
                outputs[layer_of[v]].append(v)
    # Stochastic ops (dropout, random_*) are recomputable only because our RNG is counter-based:
    # the same key and salt give the same mask. Readers of state buffers are never recomputed.
    state = _state_buffers(graph)
    recomputable = {n for n in forward if not any(v in state for v in n.inputs)}
    pinned = {v for n in graph.nodes[start:] if n.name.startswith(REMAT_PREFIX)
              for v in n.inputs if v is not None}
    return _Analysis(graph, start, layers, layer_of, stashed, outputs, recomputable, pinned)


def _every_k(m: int, k: int) -> frozenset[int]:
    """Checkpoint layers m-1-k, m-1-2k, ...: counted back from the last layer, so that the
    segment the backward needs first is the one kept, not one recomputed at once."""
    return frozenset(range(m - 1 - k, -1, -k))


def _plan(an: _Analysis, ckpt: frozenset[int]) -> tuple[list[Value], list[Value]]:
    """The checkpoint values and the stashed values to drop for checkpoint layers ``ckpt``."""
    if not ckpt:
        return [], []
    last = max(ckpt)
    keep = [v for j in sorted(ckpt) for v in an.outputs[j]]
    kept, outs = set(keep), set(an.graph.outputs)
    drop = [v for v in an.stashed
            if an.layer_of[v] <= last and v not in kept and v not in outs and v not in an.pinned
            and an.graph.producers[v] in an.recomputable and not _tiny(v)]
    return keep, drop


def _rewrite(an: _Analysis, keep: list[Value], drop: list[Value],
             meta: Mapping[str, object]) -> tuple[Graph, list[Node]]:
    """The graph with ``drop`` recomputed before its backward readers; returns the clones."""
    graph = an.graph
    dropped = set(drop)
    stashed_kept = set(an.stashed) - dropped
    available = set(keep) | set(graph.outputs) | stashed_kept
    producers = graph.producers
    b = GraphBuilder.from_graph(graph, copy_nodes=False)
    clone_of: dict[Value, Value] = {}
    clones: list[Node] = []

    def ready(u: Value) -> bool:  # usable as it is in the backward region
        return (u in clone_of or u not in an.layer_of or u in available
                or producers[u] not in an.recomputable)  # last case: kept alive, not recomputed

    def materialize(v: Value) -> None:  # emit clones for v and what it needs (post-order DFS)
        stack: list[tuple[Value, bool]] = [(v, False)]
        while stack:
            u, expanded = stack.pop()
            if ready(u):
                continue
            node = producers[u]
            if not expanded:
                stack.append((u, True))
                stack.extend((w, False) for w in reversed(node.inputs)
                             if w is not None and not ready(w))
                continue
            ins = tuple(clone_of.get(w, w) if w is not None else None for w in node.inputs)
            outs = tuple(Value(b.unique_name(REMAT_PREFIX + o.name), o.type)
                         for o in node.outputs)
            clone = Node(node.op, ins, outs, node.attrs,
                         b.unique_name(REMAT_PREFIX + node.name, "node"), node.source,
                         node.scope, "remat")
            clone_of.update(zip(node.outputs, outs, strict=True))
            clones.append(b.emit(clone))

    for i, n in enumerate(graph.nodes):
        if i >= an.start and any(v in dropped for v in n.inputs):
            for v in n.inputs:
                if v in dropped:
                    materialize(v)
            n = replace(n, inputs=tuple(clone_of[v] if v in dropped else v for v in n.inputs))
        b.emit(n)
    b.metadata["remat"] = {**meta, "checkpoints": [v.name for v in keep],
                           "dropped": [v.name for v in drop]}
    return b.build(list(graph.outputs), verify=False), clones


@dataclass(frozen=True)
class _Plan:
    keep: list[Value]
    drop: list[Value]
    graph: Graph
    clones: list[Node]
    peak: int = 0  # activation peak and extra FLOPs (filled in by the budget search)
    extra_flops: int = 0


def _activation_peak(graph: Graph, bindings: Bindings | None) -> int:
    return peak_memory(graph, bindings, include=activation_values(graph).__contains__)


def _budget_plans(an: _Analysis, bindings: Bindings | None) -> list[frozenset[int]]:
    """Chen's greedy segmentation for every threshold, then every k."""
    m = len(an.layers)
    sizes = [0] * m
    for v in an.stashed:
        sizes[an.layer_of[v]] += value_bytes(v, bindings)
    plans: list[frozenset[int]] = []
    for threshold in sorted(set(itertools.accumulate(reversed(sizes)))):
        ckpt, acc = set(), 0
        for j in range(m - 1, 0, -1):  # from the loss back: layer j-1's outputs end a segment
            acc += sizes[j]
            if acc >= threshold > 0:
                ckpt.add(j - 1)
                acc = 0
        plans.append(frozenset(ckpt))
    plans += [_every_k(m, k) for k in range(1, m)]
    return list(dict.fromkeys(p for p in plans if p))


def _budget_search(an: _Analysis, budget: int, bindings: Bindings | None,
                   meta: Mapping[str, object]) -> _Plan | None:
    try:
        base = _activation_peak(an.graph, bindings)
        if base <= budget:
            return None
        found: list[_Plan] = []
        for ckpt in _budget_plans(an, bindings):
            keep, drop = _plan(an, ckpt)
            if not drop:
                continue
            g, clones = _rewrite(an, keep, drop, meta)
            found.append(_Plan(keep, drop, g, clones, _activation_peak(g, bindings),
                               graph_flops(g, bindings, clones)))
    except ShapeError as e:
        raise RematError(f"the budget policy needs concrete sizes: {e.message}",
                         hint="pass bindings={'N': batch size, ...}") from None
    fits = [c for c in found if c.peak <= budget]
    if not fits:
        best = min((c.peak for c in found), default=base)
        raise RematError(
            f"memory budget of {budget:,} bytes cannot be met for graph '{an.graph.name}': "
            f"peak activation memory is {base:,} bytes without rematerialisation and at best "
            f"{best:,} bytes with it ({len(found)} plans over {len(an.layers)} layers tried)",
            hint="raise budget_bytes, use a smaller batch, or give the model more layer scopes")
    return min(fits, key=lambda c: (c.extra_flops, c.peak, len(c.clones)))


@dataclass(frozen=True)
class RematReport:
    """Peak memory (bytes, from liveness) and FLOPs of a graph before and after remat."""

    peak_bytes_before: int  # every live intermediate value
    peak_bytes_after: int
    activation_peak_before: int  # live forward activations (and their recomputed copies)
    activation_peak_after: int
    flops_before: int
    extra_flops: int  # FLOPs of the recomputation nodes
    recomputed_nodes: int
    checkpoints: tuple[str, ...]
    bindings: Mapping[str, int]

    @property
    def memory_ratio(self) -> float:
        """Peak activation memory before / after."""
        return self.activation_peak_before / max(1, self.activation_peak_after)

    @property
    def flops_ratio(self) -> float:
        """Total FLOPs after / before."""
        return (self.flops_before + self.extra_flops) / max(1, self.flops_before)

    def __str__(self) -> str:
        mib = 2.0**20
        return (f"remat: {self.recomputed_nodes} nodes recomputed from "
                f"{len(self.checkpoints)} checkpoints\n"
                f"  peak activations {self.activation_peak_before / mib:.2f} MiB -> "
                f"{self.activation_peak_after / mib:.2f} MiB ({self.memory_ratio:.2f}x less)\n"
                f"  peak intermediates {self.peak_bytes_before / mib:.2f} MiB -> "
                f"{self.peak_bytes_after / mib:.2f} MiB\n"
                f"  FLOPs {self.flops_before:,} + {self.extra_flops:,} recomputed "
                f"({self.flops_ratio:.2f}x)")


def remat_report(before: Graph, after: Graph, bindings: Bindings | None = None) -> RematReport:
    """Compare a graph with its rematerialised version (symbolic dims bound by ``bindings``).

    Raises :class:`~lbdl_graph.errors.ShapeError` when a symbolic dim is not bound.
    """
    old = {n.name for n in before.nodes}
    clones = [n for n in after.nodes if n.name.startswith(REMAT_PREFIX) and n.name not in old]
    meta = after.metadata.get("remat", {})
    return RematReport(
        peak_memory(before, bindings), peak_memory(after, bindings),
        _activation_peak(before, bindings), _activation_peak(after, bindings),
        graph_flops(before, bindings), graph_flops(after, bindings, clones), len(clones),
        tuple(meta.get("checkpoints", ())), dict(bindings or {}))


@dataclass(frozen=True, slots=True)
class RematResult(PassResult):
    """A :class:`PassResult` with the :class:`RematReport` (None when a symbolic dim has no
    binding)."""

    report: RematReport | None = None


def _check_args(policy: str, k: int | None, budget_bytes: int | None) -> None:
    if policy not in ("sqrt", "every_k", "budget"):
        raise RematError(f"unknown remat policy {policy!r}; use 'sqrt', 'every_k' or 'budget'")
    for name, value, owner, what in (("k", k, "every_k", "an integer k >= 1"),
                                     ("budget_bytes", budget_bytes, "budget", "budget_bytes > 0")):
        if policy != owner and value is not None:
            raise RematError(f"{name} is only used by policy '{owner}' (policy is {policy!r})")
        if policy == owner and (type(value) is not int or value < 1):
            raise RematError(f"policy '{owner}' needs {what}, got {value!r}")


def rematerialize(graph: Graph, *, policy: Policy = "sqrt", k: int | None = None,
                  budget_bytes: int | None = None, bindings: Bindings | None = None
                  ) -> RematResult:
    """Recompute dropped forward activations before their backward use (see the module doc).

    Args:
        graph: a graph with forward and backward nodes (``grad`` output or a training step);
            a forward-only graph is returned unchanged.
        policy: ``"sqrt"`` (about sqrt(n) checkpoints for n layers), ``"every_k"`` (keep the
            output of every ``k``-th layer) or ``"budget"`` (peak activation memory at most
            ``budget_bytes``, with the fewest extra FLOPs).
        bindings: values of the symbolic dims (``{"N": 64}``) for the budget and the report.

    Returns:
        A :class:`RematResult`; stats count ``recomputed_nodes``, ``dropped_values``,
        ``checkpoints`` and ``layers``. Raises :class:`RematError` for bad arguments and for a
        budget that no plan meets.
    """
    _check_args(policy, k, budget_bytes)
    an = _analyse(graph)
    if an is None:
        return RematResult(graph, False, {"recomputed_nodes": 0})
    m = len(an.layers)
    meta: dict[str, object] = {"policy": policy, "layers": m}
    if policy == "budget":
        meta["budget_bytes"] = budget_bytes
        plan = _budget_search(an, int(budget_bytes or 0), bindings, meta)
    else:
        meta["k"] = step = k if policy == "every_k" and k else max(1, round(math.sqrt(m)))
        keep, drop = _plan(an, _every_k(m, step))
        plan = _Plan(keep, drop, *_rewrite(an, keep, drop, meta)) if drop else None
    if plan is None:
        return RematResult(graph, False, {"recomputed_nodes": 0, "layers": m})
    verify(plan.graph)
    stats = {"recomputed_nodes": len(plan.clones), "dropped_values": len(plan.drop),
             "checkpoints": len(plan.keep), "layers": m}
    try:
        report: RematReport | None = remat_report(graph, plan.graph, bindings)
    except ShapeError:
        report = None
    return RematResult(plan.graph, True, stats, report)
