"""``fit``: train a Module (or a Graph, e.g. an imported ONNX model: :mod:`.graph_model`) with a
compiled training step on the NumPy or ONNX Runtime backend.

The model and its loss are traced once into a forward graph, compiled into a single training
step graph (forward, loss, backward, clipping, optimizer update, batch-norm statistics, RNG),
and that graph runs for every batch; the state (parameters, optimizer slots, step counter)
stays inside the runner. Validation uses an eval-mode graph fed with the current state.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.errors import CheckpointError, InputError, NumericError
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam, Optimizer
from lbdl_graph.passes.train_step import TrainStep, make_train_step, params_to_inputs

from ..module import Module
from .graph_model import check_batches, graph_inputs, prepare_graph
from .losses import (  # noqa: F401  (re-exported: runs.py and the CLI import them from here)
    LOSSES,
    METRICS,
    LossFn,
    _as_inputs,
    _metric_fns,
    _specs,
    loss_graphs,
    target_spec,
    trace_loss,
)
from .runners import make_eval_runner
from .runs import LocalRun, communicator, make_run

__all__ = ["LOSSES", "METRICS", "History", "compile_training", "evaluate", "fit"]

BEST = "best/"  # checkpoint prefix of early stopping's best weights


@dataclass
class History:
    """Per-epoch figures: ``history["loss"]``, ``history["val_accuracy"]``, ...; after training
    a Graph, ``graph`` is the trained graph and ``tied`` the parameters tied before training."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    graph: Graph | None = None
    tied: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]

    def keys(self) -> list[str]:
        """Every recorded figure name."""
        return sorted({k for e in self.epochs for k in e})


def compile_training(model: Module | Graph, x: Any, y: Any = None, *,
                     loss: str | LossFn = "cross_entropy",
                     metrics: Sequence[str | tuple[str, LossFn]] = (),
                     optimizer: Optimizer | None = None, clip_grad_norm: float | None = None,
                     seed: int = 0, output: str | None = None,
                     tie_weights: bool = True) -> tuple[TrainStep, Graph]:
    """The compiled training step and the eval graph (params as inputs) for ``model``: a
    Module, or a Graph whose ``output`` the loss reads, its twice-stored parameters tied first
    unless ``tie_weights=False`` (ties in ``step.graph.metadata["tied_params"]``)."""
    if isinstance(model, Graph):
        model = prepare_graph(model, tie_weights)[0]
    fwd, ev = loss_graphs(model, x, y, loss, _metric_fns(metrics), output)
    step = make_train_step(fwd, optimizer or Adam(), clip_grad_norm=clip_grad_norm, seed=seed)
    ev = params_to_inputs(ev, [p.name for p in ev.params if p.name in step.info.state])
    return step, ev


def evaluate(runner: Any, data: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray],
             batch_size: int) -> dict[str, float]:
    """Average loss and metrics of the eval graph over ``data`` (weighted by batch size)."""
    n = len(next(iter(data.values())))
    wanted = set(runner.input_names)
    params = {k: v for k, v in state.items() if k in wanted}
    totals: dict[str, float] = {}
    for idx in (np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)):
        out = runner.run({**{k: v[idx] for k, v in data.items()}, **params})
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(idx)
    return {k: v / n for k, v in totals.items()}


def fit(model: Module | Graph, x: Any, y: Any = None, *, loss: str | LossFn = "cross_entropy",
        metrics: Sequence[str | tuple[str, LossFn]] = (), optimizer: Optimizer | None = None,
        epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None, shuffle: bool = True, seed: int = 0,
        early_stopping: int | None = None, monitor: str = "val_loss", mode: str = "auto",
        backend: str = "numpy", clip_grad_norm: float | None = None,
        progress: bool | None = None, checkpoint: str | Path | None = None,
        resume: str | Path | None = None, max_steps: int | None = None,
        distributed: bool | Any = False, drop_last: bool = False, output: str | None = None,
        tie_weights: bool = True, sync_batch_norm: bool = False) -> History:
    """Train ``model`` on ``x`` (an array or a dict of named arrays, each fed to the
    ``forward`` parameter of its name, or in order when the names are not all parameters)
    and targets ``y``.

    ``y=None`` trains a reconstruction (autoencoder) on the first input. ``early_stopping=k``
    stops after k epochs without improvement of ``monitor`` and restores the best weights;
    ``mode`` says whether lower ("min") or higher ("max") is better ("auto": min for losses,
    max for accuracies, an error for other names). ``checkpoint`` is written after every epoch
    and when ``max_steps`` stops mid-epoch (atomically); ``resume`` continues from one, at the
    sample where it stopped.
    ``distributed=True`` (or a :class:`~.distributed.Communicator`) trains data-parallel over
    the MPI ranks started by ``mpiexec``: every rank calls ``fit`` with the same data and
    settings, ``batch_size`` is per rank, each rank trains on its shard (the last batch padded,
    or dropped with ``drop_last``), gradients are averaged every step, only rank 0 shows
    progress and writes checkpoints; see :mod:`.runs`. There batch norms keep per-rank
    statistics (PyTorch DDP's default) unless ``sync_batch_norm=True``, which sums them over
    the ranks in the forward and the backward pass (the global batch's BN; ignored in one
    process, where it is what BN does anyway).
    The trained parameters and buffers are loaded back into ``model``. Returns the History.
    ``model`` may be a Graph (an imported ONNX model): the loss reads its ``output`` (default:
    its only output), ``x`` is keyed by its input names, parameters stored twice are tied first
    unless ``tie_weights=False`` (reported in ``history.tied``) and the trained graph is
    ``history.graph`` (see :mod:`.graph_model`).
    """
    comm = communicator(distributed)
    # with ranks, a rank that raises (even on bad input) aborts them all instead of leaving
    # the others waiting in a collective
    with comm.guard() if comm is not None else contextlib.nullcontext():
        return _fit(model, x, y, comm, loss=loss, metrics=metrics, optimizer=optimizer,
                    epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                    validation_data=validation_data, shuffle=shuffle, seed=seed,
                    early_stopping=early_stopping, monitor=monitor, mode=mode,
                    backend=backend, clip_grad_norm=clip_grad_norm, progress=progress,
                    checkpoint=checkpoint, resume=resume, max_steps=max_steps,
                    drop_last=drop_last, output=output, tie_weights=tie_weights,
                    sync_batch_norm=sync_batch_norm)


def _fit(model: Module | Graph, x: Any, y: Any, comm: Any, *, loss: str | LossFn,
         metrics: Sequence[str | tuple[str, LossFn]], optimizer: Optimizer | None,
         epochs: int, batch_size: int, validation_split: float,
         validation_data: tuple[Any, Any] | None, shuffle: bool, seed: int,
         early_stopping: int | None, monitor: str, mode: str, backend: str,
         clip_grad_norm: float | None, progress: bool | None, checkpoint: str | Path | None,
         resume: str | Path | None, max_steps: int | None, drop_last: bool,
         output: str | None, tie_weights: bool, sync_batch_norm: bool = False) -> History:
    """:func:`fit` after the ranks (if any) are known: checks, splits, then trains."""
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size})")
    tied: dict[str, str] = {}
    if isinstance(model, Graph):
        model, tied = prepare_graph(model, tie_weights)
    as_inputs = partial(graph_inputs, model) if isinstance(model, Graph) else _as_inputs
    data = as_inputs(x)
    if "y" in data:
        raise InputError("input name 'y' is reserved for the targets; rename that input")
    if y is not None:
        data["y"] = np.asarray(y)
    better_is = _direction(monitor, mode) if early_stopping is not None else "min"
    n = {len(v) for v in data.values()}
    if len(n) != 1:
        lengths = {k: len(v) for k, v in data.items()}
        raise InputError(f"inputs and targets differ in length: {lengths}")
    total = n.pop()
    rng = np.random.default_rng(seed)
    val: dict[str, np.ndarray] | None = None
    if validation_data is not None:
        val = as_inputs(validation_data[0])
        if validation_data[1] is not None:
            val["y"] = np.asarray(validation_data[1])
    elif validation_split > 0:
        if not 0 < validation_split < 1:
            raise InputError(f"validation_split must be in (0, 1), got {validation_split}")
        perm = rng.permutation(total)
        n_val = max(1, round(total * validation_split))
        val = {k: v[perm[:n_val]] for k, v in data.items()}
        data = {k: v[perm[n_val:]] for k, v in data.items()}
        total -= n_val
    if isinstance(model, Graph):
        check_batches(model, batch_size, drop_last, {"training": total, "validation": len(
            next(iter(val.values()))) if val else 0})
    run = make_run(comm, total, batch_size, seed, shuffle, drop_last)
    history = _train(run, model, data, val, loss=loss, metrics=metrics, optimizer=optimizer,
                     epochs=epochs, early_stopping=early_stopping, monitor=monitor,
                     better_is=better_is, backend=backend, clip_grad_norm=clip_grad_norm,
                     progress=progress, checkpoint=checkpoint, resume=resume,
                     max_steps=max_steps, seed=seed, output=output,
                     sync_batch_norm=sync_batch_norm)
    history.tied = tied
    return history


def _train(run: LocalRun, model: Module | Graph, data: dict[str, np.ndarray],
           val: dict[str, np.ndarray] | None, *, loss: str | LossFn,
           metrics: Sequence[str | tuple[str, LossFn]], optimizer: Optimizer | None,
           epochs: int, early_stopping: int | None, monitor: str, better_is: str, backend: str,
           clip_grad_norm: float | None, progress: bool | None, checkpoint: str | Path | None,
           resume: str | Path | None, max_steps: int | None, seed: int,
           output: str | None, sync_batch_norm: bool = False) -> History:
    """The epoch loop of :func:`fit` (after the data is checked and split)."""
    xs = {k: v for k, v in data.items() if k != "y"}
    step, ev = run.compile(model, xs, data.get("y"), loss=loss, metrics=metrics,
                           optimizer=optimizer, clip_grad_norm=clip_grad_norm, seed=seed,
                           output=output, tie_weights=False,  # _fit tied a graph already
                           sync_batch_norm=sync_batch_norm)
    runner = run.runner(step, backend)
    ev_runner = make_eval_runner(ev, backend)
    run.start(runner, {"optimizer": optimizer, "loss": getattr(loss, "__qualname__", loss),
                       "metrics": [m if isinstance(m, str) else m[0] for m in metrics],
                       "epochs": epochs, "batch_size": run.batch_size, "seed": seed,
                       "backend": backend, "clip": clip_grad_norm, "monitor": monitor,
                       "sync_batch_norm": sync_batch_norm,
                       "early_stopping": early_stopping, "max_steps": max_steps,
                       "validation": None if val is None else len(next(iter(val.values())))},
              data)
    history = History()
    start_epoch, start = 0, 0
    best: tuple[float, dict[str, np.ndarray]] | None = None
    bad_epochs = 0
    if resume is not None:
        state, meta = run.load(resume)
        kept = {k[len(BEST):]: v for k, v in state.items() if k.startswith(BEST)}
        state = {k: v for k, v in state.items() if not k.startswith(BEST)}
        if kept and "best_score" in meta:  # early stopping carries on where it was
            best, bad_epochs = (float(meta["best_score"]), kept), int(meta["bad_epochs"])
            history.best_epoch = meta.get("best_epoch")
        missing = sorted(set(step.info.state) - set(state))
        extra = sorted(set(state) - set(step.info.state))
        if missing or extra:
            raise CheckpointError(f"checkpoint {resume} does not fit this model and optimizer: "
                                  f"missing {missing}, unexpected {extra}")
        runner.set_state(state)
        start_epoch = int(meta.get("epoch", 0))
        # "samples": the sample position in the epoch's order (any world size); checkpoints
        # written before it existed hold "batch", a step count of this batch size
        start = int(meta.get("samples", int(meta.get("batch", 0)) * run.batch_size * run.size))
        history.epochs = [e for e in meta.get("history", []) if not e.get("partial")]
    steps_done = 0
    show = (sys.stderr.isatty() if progress is None else progress) and run.logs
    for epoch in range(start_epoch, epochs):
        batches = run.batches(epoch, start)
        first_batch = -(-start // (run.batch_size * run.size))
        sums: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        bar = _progress(len(batches), epoch, epochs, show)
        stopped = False
        done = 0
        for done, idx in enumerate(batches, start=1):
            batch = {k: v[idx] for k, v in data.items()}
            out = runner.step(batch)
            lv = float(out[step.info.loss])
            if not math.isfinite(lv):
                raise run.bad_loss(runner, step, batch, lv, epoch)
            for k in (step.info.loss, *step.info.metrics):
                sums[k] = sums.get(k, 0.0) + float(out[k]) * len(idx)
            steps_done += 1
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                shown = {k: f"{float(out[k]):.4f}" for k in step.info.metrics if k != "lr"}
                bar.set_postfix(loss=f"{lv:.4f}", **shown, refresh=False)
            if max_steps is not None and steps_done >= max_steps:
                stopped = done < len(batches)
                break
        if bar is not None:
            bar.close()
        record = {k: v / max(seen, 1) for k, v in sums.items() if k != "lr"}
        record["epoch"] = epoch + 1
        record["seconds"] = time.perf_counter() - t0
        if stopped:
            record["partial"] = True
        run.sync(runner, "end of epoch")
        if val is not None:
            record.update({f"val_{k}": v for k, v in
                           run.evaluate(ev_runner, val, runner.state()).items()})
        history.epochs.append(record)
        if early_stopping is not None and not stopped:
            if monitor not in record:
                raise InputError(f"cannot monitor {monitor!r}; recorded: {sorted(record)}")
            score = record[monitor]
            better = best is None or (score > best[0] if better_is == "max" else score < best[0])
            if better:
                best, bad_epochs = (score, runner.state()), 0
                history.best_epoch = epoch + 1
            else:
                bad_epochs += 1
        if checkpoint is not None:
            # a partial epoch resumes at its next sample (same shuffled order); early stopping's
            # best weights and patience travel along so a resumed run decides the same way
            position = {"epoch": epoch, "batch": first_batch + done,
                        "samples": run.consumed(start, done)} if stopped else \
                {"epoch": epoch + 1}
            tensors: dict[str, np.ndarray] = runner.state()
            more: dict[str, Any] = {}
            if best is not None:
                tensors.update({BEST + k: v for k, v in best[1].items()})
                more = {"best_score": best[0], "bad_epochs": bad_epochs,
                        "best_epoch": history.best_epoch}
            run.save(checkpoint, tensors, {**position, **more, "history": history.epochs})
        start = 0
        if early_stopping is not None and bad_epochs >= early_stopping:
            history.stopped_early = True
            break
        if max_steps is not None and steps_done >= max_steps:
            break
    final = best[1] if (early_stopping is not None and best is not None) else runner.state()
    history.graph = _load_into(model, final)
    return history


def _direction(monitor: str, mode: str) -> str:
    """'min' or 'max': which way ``monitor`` improves."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise InputError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if "loss" in monitor:
        return "min"
    if "acc" in monitor:
        return "max"
    raise InputError(f"cannot tell whether {monitor!r} should go up or down; pass mode='min' "
                     "or mode='max'")


def _first_bad_node(step: TrainStep, batch: Mapping[str, np.ndarray],
                    state: Mapping[str, np.ndarray], loss: float, epoch: int) -> NumericError:
    """Replay the step on NumPy with NaN/Inf checks to name the first node that produced one."""
    from lbdl_graph.backends.numpy import Interpreter

    msg = f"loss became {loss} at epoch {epoch + 1}"
    try:
        Interpreter(step.graph, check_numerics=True).run({**batch, **state})
    except NumericError as e:
        return NumericError(f"{msg}: {e.message}", node=e.node, op=e.op, source=e.source)
    return NumericError(f"{msg} (the NumPy replay of the step stayed finite)")


def _load_into(model: Module | Graph, state: Mapping[str, np.ndarray]) -> Graph | None:
    """Load the trained state into a Module (None), or the trained copy of a Graph."""
    if isinstance(model, Graph):
        return model.with_params({k: v for k, v in state.items() if k in model.param_map})
    own = model.state_dict()
    model.load_state_dict({k: state.get(k, v) for k, v in own.items()})
    return None


def _progress(total: int, epoch: int, epochs: int, show: bool) -> Any:
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=True)
