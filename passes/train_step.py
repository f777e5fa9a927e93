"""The compiled training step: forward, loss, backward, clipping and optimizer update in one graph.

``make_train_step`` turns a forward graph whose output ``loss`` is a scalar (after
``constant_causal_masks``: static causal masks as constants) into a graph

    (batch inputs, params, optimizer state, step) -> (loss, metrics, params:next, state:next,
                                                     step:next, buffers:next)

Every piece of mutable state is an input ``s`` with a matching output ``s:next``, listed in
``graph.metadata["state"]``; a runner feeds the outputs of one step as the inputs of the next
(on ONNX Runtime they stay on the device). Batch-norm running statistics come from the trace's
``metadata["state_updates"]``; the dropout key is built from a fixed seed and the step counter,
so random masks are a pure function of (seed, step, element index). Update nodes have the scope
``optim/<parameter>`` and the origin ``optim:<optimizer>`` (``optim:adam``); the key nodes the
scope ``rng``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import AutodiffError, GraphError
from lbdl_graph.graph import Graph, Value

from .constant_causal_masks import constant_causal_masks
from .fused_update import FUSE_BELOW, group_small, grouped_updates
from .optim import Optimizer, as_schedule, clip_by_global_norm

__all__ = ["SplitTrainStep", "TrainStep", "TrainStepInfo", "make_split_train_step",
           "make_train_step", "params_to_inputs", "rank_seed"]

STEP = "step"


@dataclass(frozen=True)
class TrainStepInfo:
    """What a runner needs to drive a compiled step (also stored in graph.metadata)."""

    state: tuple[str, ...]  # inputs whose next value is the output "<name>:next"
    params: tuple[str, ...]  # trainable parameters (a subset of state)
    batch: tuple[str, ...]  # per-step data inputs
    loss: str
    metrics: tuple[str, ...]

    @staticmethod
    def of(graph: Graph) -> TrainStepInfo:
        """Read the info back from a compiled step graph."""
        meta = graph.metadata.get("train_step")
        if not meta:
            raise GraphError(f"graph '{graph.name}' is not a compiled training step")
        return TrainStepInfo(tuple(meta["state"]), tuple(meta["params"]), tuple(meta["batch"]),
                             meta["loss"], tuple(meta["metrics"]))


def rank_seed(seed: int, rank: int) -> int:
    """The dropout seed of data-parallel rank ``rank``: ``seed`` itself on rank 0, a distinct
    31-bit seed on every other rank (so masks differ per rank and stay reproducible)."""
    return seed if rank == 0 else (seed + rank * 0x9E3779B1) & (2**31 - 1)


def params_to_inputs(graph: Graph, names: Sequence[str]) -> Graph:
    """Turn parameters into graph inputs (same Value objects, so every node is kept)."""
    moved = [graph.param_map[n] for n in names]
    keep = [p for p in graph.params if p.name not in set(names)]
    return graph.replace(inputs=[*graph.inputs, *(p.value for p in moved)], params=keep)


@dataclass
class _Parts:
    """The pieces shared by the fused and the split step: the gradient half in a builder."""

    builder: GraphBuilder
    step: Value
    values: dict[str, Value]  # outputs of the gradient graph by name
    trainable: list[str]
    updates: dict[str, str]  # buffer -> forward output holding its next value
    metrics: list[str]
    batch: list[str]
    initial: dict[str, np.ndarray]


def _gradient_half(graph: Graph, loss: str, metrics: Sequence[str] | None, seed: int) -> _Parts:
    """Forward + loss + backward with parameters and buffers as inputs, the key from ``step``."""
    from .autodiff import grad

    if loss not in graph.output_names():
        raise AutodiffError(f"graph '{graph.name}' has no output '{loss}'; outputs: "
                            f"{graph.output_names()}", hint="fit(graph, x, y) or "
                            "frontends.training.graph_model.attach_loss appends a loss to a "
                            "graph's output")
    updates: dict[str, str] = dict(graph.metadata.get("state_updates", {}))
    update_outputs = set(updates.values())
    if metrics is None:
        metrics = [n for n in graph.output_names() if n != loss and n not in update_outputs]
    trainable = [p.name for p in graph.params if p.trainable]
    if not trainable:
        raise AutodiffError(f"graph '{graph.name}' has no trainable parameters")
    initial = {p.name: p.data for p in graph.params if p.trainable or p.name in updates}
    batch = [v.name for v in graph.inputs if v.name != graph.metadata.get("rng_input")]

    # static causal masks become constants and masking wheres biases before differentiation
    g = grad(constant_causal_masks(graph).graph, loss, trainable)
    g = params_to_inputs(g, [*trainable, *updates])
    b = GraphBuilder.from_graph(g, copy_nodes=False)
    step = b.input(STEP, "i64", ())
    rng = graph.metadata.get("rng_input")
    if rng:
        # dropout key = (seed, step): masks are a pure function of seed, step and element index
        old = g.input(rng)
        with b, b.scope("rng"), b.provenance("rng", "train_step:rng"):
            key = ops.concat(ops.constant(value=np.array([seed], np.int64)),
                             ops.reshape(step, shape=(1,)), axis=0)
        b.inputs.remove(old)
        for n in g.nodes:
            if old in n.inputs:
                n = replace(n, inputs=tuple(key if v is old else v for v in n.inputs))
            b.emit(n)
    else:
        for n in g.nodes:
            b.emit(n)
    return _Parts(b, step, {v.name: v for v in g.outputs}, trainable, updates, list(metrics),
                  batch, initial)


def _update_half(b: GraphBuilder, trainable: Sequence[str], step: Value,
                 grads: dict[str, Value], optimizer: Optimizer, clip_grad_norm: float | None,
                 outputs: dict[str, Value], fuse_below: int) -> list[str]:
    """Clipping and the optimizer update, built in ``b`` (active); adds to ``outputs`` and
    returns the optimizer-state names. Parameters of fewer than ``fuse_below`` elements are
    updated together over a flat buffer (``fused_update.py``)."""
    opt = f"optim:{type(optimizer).__name__.lower()}"
    with b.scope("optimizer"), b.provenance("optim", opt):
        if clip_grad_norm is not None:
            with b.provenance(origin="optim:clip_grad_norm"):
                grads, norm = clip_by_global_norm(grads, clip_grad_norm)
            outputs["grad_norm"] = norm
        with b.provenance(origin="optim:schedule"):
            lr = as_schedule(optimizer.lr)(step)
        outputs["lr"] = lr
        inputs = {v.name: v for v in b.inputs}
        params = {p: inputs[p] for p in trainable}
        slots = {p: {s: b.input(f"opt.{s}/{p}", inputs[p].type.dtype, inputs[p].type.shape)
                     for s in optimizer.slots()} for p in trainable}
        done: dict[str, tuple[Value, dict[str, Value]]] = {}
        for names in group_small(params, optimizer, fuse_below):
            done.update(grouped_updates(b, names, params, grads, slots, optimizer, step, lr))
        state_names: list[str] = []
        for p in trainable:
            if p not in done:
                with b.scope(p), b.provenance(f"optim/{p}"):
                    done[p] = optimizer.update(inputs[p], grads[p], slots[p], step, lr)
            new_p, new_slots = done[p]
            outputs[f"{p}:next"] = new_p
            for s, v in new_slots.items():
                outputs[f"opt.{s}/{p}:next"] = v
                state_names.append(f"opt.{s}/{p}")
        with b.provenance(origin="optim:step"):
            outputs[f"{STEP}:next"] = ops.add(step, ops.constant(value=np.int64(1)))
    return state_names


def _finish(graph: Graph, parts: _Parts, optimizer: Optimizer, loss: str,
            state_names: list[str], clip_grad_norm: float | None
            ) -> tuple[TrainStepInfo, dict[str, np.ndarray], dict[str, Any]]:
    """The step's info, initial state and metadata."""
    trainable, initial = parts.trainable, parts.initial
    state = [*trainable, *parts.updates, *state_names, STEP]
    init = dict(initial)
    init.update(optimizer.init_state({p: initial[p] for p in trainable}))
    init[STEP] = np.array(0, np.int64)
    info = TrainStepInfo(tuple(state), tuple(trainable), tuple(parts.batch), loss,
                         (*parts.metrics, *(["grad_norm"] if clip_grad_norm else []), "lr"))
    meta = {k: v for k, v in graph.metadata.items() if k not in ("state_updates", "rng_input")}
    meta["train_step"] = {"state": list(info.state), "params": list(info.params),
                          "batch": list(info.batch), "loss": loss, "metrics": list(info.metrics)}
    return info, init, meta


def make_train_step(
    graph: Graph,
    optimizer: Optimizer,
    *,
    loss: str = "loss",
    metrics: Sequence[str] | None = None,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    fuse_below: int = FUSE_BELOW,
) -> TrainStep:
    """Compile ``graph`` (forward + loss) into one training-step graph; see the module doc.

    ``metrics`` are forward outputs reported each step (default: every output except the loss
    and state updates); with ``clip_grad_norm`` the global gradient norm is clipped and reported
    as metric ``grad_norm``. Parameters of fewer than ``fuse_below`` elements share one update
    over a flat buffer when the optimizer is elementwise (bit-identical; default 0: off).
    """
    parts = _gradient_half(graph, loss, metrics, seed)
    b, values = parts.builder, parts.values
    outputs: dict[str, Value] = {loss: values[loss]}
    outputs.update((m, values[m]) for m in parts.metrics)
    with b:
        grads = {p: values[f"grad:{p}"] for p in parts.trainable}
        state_names = _update_half(b, parts.trainable, parts.step, grads, optimizer,
                                   clip_grad_norm, outputs, fuse_below)
    step_next = outputs.pop(f"{STEP}:next")
    for buf, out in parts.updates.items():
        outputs[f"{buf}:next"] = values[out]
    outputs[f"{STEP}:next"] = step_next
    step_graph = b.build(outputs, name=f"{graph.name}_train_step", prune=True)
    info, init, meta = _finish(graph, parts, optimizer, loss, state_names, clip_grad_norm)
    return TrainStep(step_graph.replace(metadata=meta), info, init)


def make_split_train_step(
    graph: Graph,
    optimizer: Optimizer,
    *,
    loss: str = "loss",
    metrics: Sequence[str] | None = None,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    fuse_below: int = FUSE_BELOW,
) -> SplitTrainStep:
    """The training step of :func:`make_train_step` as two graphs, for data parallelism.

    The gradient graph maps (batch, parameters, buffers, step) to (loss, metrics, ``grad:<p>``,
    ``<buffer>:next``); the update graph maps (parameters, optimizer state, step, ``grad:<p>``)
    to (``<p>:next``, optimizer state ``:next``, ``step:next``, ``lr``, ``grad_norm``). Between
    the two a runner averages the gradients over the ranks. State names and initial values are
    those of the fused step, so checkpoints move between the two forms.
    """
    parts = _gradient_half(graph, loss, metrics, seed)
    values = parts.values
    g_out: dict[str, Value] = {loss: values[loss]}
    g_out.update((m, values[m]) for m in parts.metrics)
    g_out.update((f"grad:{p}", values[f"grad:{p}"]) for p in parts.trainable)
    g_out.update((f"{buf}:next", values[out]) for buf, out in parts.updates.items())
    grad_graph = parts.builder.build(g_out, name=f"{graph.name}_grad_step", prune=True)

    ub = GraphBuilder(f"{graph.name}_update_step")
    types = {v.name: v.type for v in grad_graph.inputs}
    for p in parts.trainable:
        ub.input(p, types[p].dtype, types[p].shape)
    step = ub.input(STEP, "i64", ())
    grads = {p: ub.input(f"grad:{p}", types[p].dtype, types[p].shape) for p in parts.trainable}
    u_out: dict[str, Value] = {}
    with ub:
        state_names = _update_half(ub, parts.trainable, step, grads, optimizer, clip_grad_norm,
                                   u_out, fuse_below)
    update_graph = ub.build(u_out, prune=True)
    info, init, meta = _finish(graph, parts, optimizer, loss, state_names, clip_grad_norm)
    return SplitTrainStep(grad_graph.replace(metadata=meta), update_graph, info, init)


@dataclass(frozen=True)
class SplitTrainStep:
    """A training step as a gradient graph and an update graph (see make_split_train_step)."""

    grad_graph: Graph
    update_graph: Graph
    info: TrainStepInfo
    initial_state: Mapping[str, np.ndarray]

    @property
    def update_state(self) -> tuple[str, ...]:
        """The state the update graph reads and writes (parameters, optimizer state, step)."""
        names = {v.name for v in self.update_graph.inputs}
        return tuple(s for s in self.info.state if s in names)

    @property
    def grad_state(self) -> tuple[str, ...]:
        """The state the gradient graph reads (parameters, buffers, step)."""
        names = {v.name for v in self.grad_graph.inputs}
        return tuple(s for s in self.info.state if s in names)


@dataclass(frozen=True)
class TrainStep:
    """A compiled training step: its graph, the state wiring and the initial state values."""

    graph: Graph
    info: TrainStepInfo
    initial_state: Mapping[str, np.ndarray]
