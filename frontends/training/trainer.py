"""``fit``: train a Module with a compiled training step on the NumPy or ONNX Runtime backend.

The model and its loss are traced once into a forward graph, compiled into a single training
step graph (forward, loss, backward, clipping, optimizer update, batch-norm statistics, RNG),
and that graph runs for every batch; the state (parameters, optimizer slots, step counter)
stays inside the runner. Validation uses an eval-mode graph fed with the current state.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.errors import CheckpointError, InputError, NumericError
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam, Optimizer
from lbdl_graph.passes.train_step import TrainStep, make_train_step, params_to_inputs

from .. import functional as F
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec, trace
from .checkpoint import load_checkpoint, save_checkpoint
from .graph_model import (
    attach_loss,
    check_batches,
    graph_inputs,
    prepare_graph,
    target_spec,
)
from .runners import make_eval_runner, make_step_runner

__all__ = ["LOSSES", "METRICS", "History", "compile_training", "evaluate", "fit"]

LossFn = Callable[[Any, Tensor], Tensor]
BEST = "best/"  # checkpoint prefix of early stopping's best weights


def _ce(out: Tensor, y: Tensor) -> Tensor:
    # PyTorch's layout puts classes on axis 1 ((N, C, H, W) logits, (N, H, W) targets); sequence
    # models give (N, T, C) logits with (N, T) targets: classes last
    classes_last = out.ndim > 2 and tuple(y.shape) == tuple(out.shape[:-1])
    if classes_last and tuple(y.shape) != tuple(out.shape[:1]) + tuple(out.shape[2:]):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.cross_entropy(out, y)


LOSSES: dict[str, LossFn] = {
    "cross_entropy": _ce,
    "mse": lambda out, y: F.mse_loss(out, y),
    "bce": lambda out, y: F.binary_cross_entropy_with_logits(out, y),
}


def _accuracy(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(-1) == y).float().mean()


METRICS: dict[str, LossFn] = {"accuracy": _accuracy}


@dataclass
class History:
    """Per-epoch figures: ``history["loss"]``, ``history["val_accuracy"]``, ...

    When a Graph was trained, ``graph`` is the trained graph (after tying) and ``tied`` the
    parameters tied before training (``copy -> kept`` or ``copy -> transpose(kept)``).
    """

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


def _as_inputs(x: Any) -> dict[str, np.ndarray]:
    if isinstance(x, Mapping):
        return {k: np.asarray(v) for k, v in x.items()}
    return {"x": np.asarray(x)}


def _specs(data: Mapping[str, np.ndarray]) -> dict[str, InputSpec]:
    return {k: InputSpec(("N", *v.shape[1:]), v.dtype, k) for k, v in data.items()}


def _loss_fn(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable")
    return LOSSES[loss]


def _metric_fns(metrics: Sequence[str | tuple[str, LossFn]]) -> dict[str, LossFn]:
    out: dict[str, LossFn] = {}
    for m in metrics:
        if isinstance(m, tuple):
            out[m[0]] = m[1]
        elif m in METRICS:
            out[m] = METRICS[m]
        else:
            raise InputError(f"unknown metric {m!r}; use one of {sorted(METRICS)} or (name, fn)")
    return out


def trace_loss(model: Module, inputs: Mapping[str, InputSpec], target: InputSpec | None,
               loss: str | LossFn, metrics: Mapping[str, LossFn], *, training: bool) -> Graph:
    """Trace ``model`` followed by its loss and metrics into one graph (outputs loss, metrics)."""
    lfn = _loss_fn(loss)
    names = list(inputs)

    def with_loss(**kw: Tensor) -> dict[str, Tensor]:
        y = kw.pop("y") if target is not None else None
        out = model(*(kw[n] for n in names)) if len(names) > 1 else model(kw[names[0]])
        target_t = y if y is not None else kw[names[0]]  # no target: reconstruct the input
        res = {"loss": lfn(out, target_t)}
        res.update((k, f(out, target_t)) for k, f in metrics.items())
        return res

    specs: dict[str, InputSpec] = dict(inputs)
    if target is not None:
        specs["y"] = target
    return trace(with_loss, specs, name=type(model).__name__, training=training, module=model)


def compile_training(model: Module | Graph, x: Any, y: Any = None, *,
                     loss: str | LossFn = "cross_entropy",
                     metrics: Sequence[str | tuple[str, LossFn]] = (),
                     optimizer: Optimizer | None = None, clip_grad_norm: float | None = None,
                     seed: int = 0, output: str | None = None,
                     tie_weights: bool = True) -> tuple[TrainStep, Graph]:
    """The compiled training step and the eval graph (params as inputs) for ``model``.

    ``model`` is a Module, or a Graph whose ``output`` (default: its only output) the loss
    reads; a graph's twice-stored parameters are tied first unless ``tie_weights=False``
    (the ties are in ``step.graph.metadata["tied_params"]``).
    """
    mfns = _metric_fns(metrics)
    if isinstance(model, Graph):
        graph, _ = prepare_graph(model, tie_weights)
        target = target_spec(graph, y, output)
        fwd = attach_loss(graph, target, _loss_fn(loss), mfns, output=output, training=True)
        ev = attach_loss(graph, target, _loss_fn(loss), mfns, output=output, training=False)
    else:
        data = _as_inputs(x)
        target = (InputSpec(("N", *np.shape(y)[1:]), np.asarray(y).dtype, "y")
                  if y is not None else None)
        fwd = trace_loss(model, _specs(data), target, loss, mfns, training=True)
        ev = trace_loss(model, _specs(data), target, loss, mfns, training=False)
    step = make_train_step(fwd, optimizer or Adam(), clip_grad_norm=clip_grad_norm, seed=seed)
    ev = params_to_inputs(ev, [p.name for p in ev.params if p.name in step.info.state])
    return step, ev


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def evaluate(runner: Any, data: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray],
             batch_size: int) -> dict[str, float]:
    """Average loss and metrics of the eval graph over ``data`` (weighted by batch size)."""
    n = len(next(iter(data.values())))
    wanted = set(runner.input_names)
    params = {k: v for k, v in state.items() if k in wanted}
    totals: dict[str, float] = {}
    for idx in _batches(n, batch_size, None):
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
        output: str | None = None, tie_weights: bool = True) -> History:
    """Train ``model`` on ``x`` (an array or a dict of named arrays) and targets ``y``.

    ``y=None`` trains a reconstruction (autoencoder) on the first input. ``early_stopping=k``
    stops after k epochs without improvement of ``monitor`` and restores the best weights;
    ``mode`` says whether lower ("min") or higher ("max") is better ("auto": min for losses,
    max for accuracies, an error for other names). ``checkpoint`` is written after every epoch
    and when ``max_steps`` stops mid-epoch (atomically); ``resume`` continues from one, at the
    batch where it stopped.
    The trained parameters and buffers are loaded back into a Module. ``model`` may also be a
    Graph (an imported ONNX model): the loss reads its ``output`` (default: its only output),
    ``x`` is keyed by its input names, parameters stored twice are tied first unless
    ``tie_weights=False`` (see :mod:`.graph_model`), and the trained graph is
    ``history.graph``. Returns the History.
    """
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size})")
    tied: dict[str, str] = {}
    if isinstance(model, Graph):
        model, tied = prepare_graph(model, tie_weights)
        data = graph_inputs(model, x)
    else:
        data = _as_inputs(x)
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
        val = (graph_inputs(model, validation_data[0]) if isinstance(model, Graph)
               else _as_inputs(validation_data[0]))
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
    xs = {k: v for k, v in data.items() if k != "y"}
    if isinstance(model, Graph):
        check_batches(model, batch_size, {"training": total, "validation":
                                          len(next(iter(val.values()))) if val else 0})
    step, ev = compile_training(model, xs, data.get("y"), loss=loss, metrics=metrics,
                                optimizer=optimizer, clip_grad_norm=clip_grad_norm, seed=seed,
                                output=output, tie_weights=False)
    runner = make_step_runner(step, backend)
    ev_runner = make_eval_runner(ev, backend)
    history = History(tied=tied)
    start_epoch, skip = 0, 0
    best: tuple[float, dict[str, np.ndarray]] | None = None
    bad_epochs = 0
    if resume is not None:
        state, meta = load_checkpoint(resume)
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
        start_epoch, skip = int(meta.get("epoch", 0)), int(meta.get("batch", 0))
        history.epochs = [e for e in meta.get("history", []) if not e.get("partial")]
    steps_done = 0
    show = sys.stderr.isatty() if progress is None else progress
    for epoch in range(start_epoch, epochs):
        order_rng = np.random.default_rng([seed, epoch]) if shuffle else None
        batches = _batches(total, batch_size, order_rng)[skip:]
        first_batch, skip = len(_batches(total, batch_size, None)) - len(batches), 0
        sums: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        bar = _progress(len(batches), epoch, epochs, show)
        stopped = False
        for done, idx in enumerate(batches, start=first_batch + 1):
            batch = {k: v[idx] for k, v in data.items()}
            out = runner.step(batch)
            lv = float(out[step.info.loss])
            if not math.isfinite(lv):
                raise _first_bad_node(step, batch, runner.previous_state(), lv, epoch)
            for k in (step.info.loss, *step.info.metrics):
                sums[k] = sums.get(k, 0.0) + float(out[k]) * len(idx)
            steps_done += 1
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                shown = {k: f"{float(out[k]):.4f}" for k in step.info.metrics if k != "lr"}
                bar.set_postfix(loss=f"{lv:.4f}", **shown, refresh=False)
            if max_steps is not None and steps_done >= max_steps:
                stopped = done < first_batch + len(batches)
                break
        if bar is not None:
            bar.close()
        record = {k: v / max(seen, 1) for k, v in sums.items() if k != "lr"}
        record["epoch"] = epoch + 1
        record["seconds"] = time.perf_counter() - t0
        if stopped:
            record["partial"] = True
        if val is not None:
            record.update({f"val_{k}": v for k, v in
                           evaluate(ev_runner, val, runner.state(), batch_size).items()})
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
            # a partial epoch resumes at its next batch (same shuffled order); early stopping's
            # best weights and patience travel along so a resumed run decides the same way
            position = {"epoch": epoch, "batch": done} if stopped else {"epoch": epoch + 1}
            tensors, extra = runner.state(), {}
            if best is not None:
                tensors.update({BEST + k: v for k, v in best[1].items()})
                extra = {"best_score": best[0], "bad_epochs": bad_epochs,
                         "best_epoch": history.best_epoch}
            save_checkpoint(checkpoint, tensors, {**position, **extra,
                                                  "history": history.epochs})
        if early_stopping is not None and bad_epochs >= early_stopping:
            history.stopped_early = True
            break
        if max_steps is not None and steps_done >= max_steps:
            break
    final = best[1] if (early_stopping is not None and best is not None) else runner.state()
    if isinstance(model, Graph):
        history.graph = model.with_params({k: v for k, v in final.items()
                                           if k in model.param_map})
    else:
        _load_into(model, final)
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


def _load_into(model: Module, state: Mapping[str, np.ndarray]) -> None:
    own = model.state_dict()
    model.load_state_dict({k: state.get(k, v) for k, v in own.items()})


def _progress(total: int, epoch: int, epochs: int, show: bool) -> Any:
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=True)
