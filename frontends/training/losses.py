"""What ``fit`` trains on: the losses and metrics by name, and the model followed by them.

:func:`loss_graphs` gives the forward graph with ``loss`` (and metric) outputs that the
training step is compiled from, in training and eval mode: a Module is traced with its loss
(:func:`trace_loss`, targets as the input ``y``), a Graph gets the loss attached to one of its
outputs (:func:`~.graph_model.graph_losses`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lbdl_graph.errors import InputError
from lbdl_graph.graph import Graph

from .. import functional as F
from ..functional.norm import sync_batch_norm as sync_bn
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec, trace
from .graph_model import graph_losses

__all__ = ["LOSSES", "METRICS", "LossFn", "loss_graphs", "target_spec", "trace_loss"]

LossFn = Callable[[Any, Tensor], Tensor]


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


def _call(model: Module, names: list[str], kw: Mapping[str, Tensor]) -> Any:
    """``model`` on the named inputs: by keyword when ``forward`` has a parameter of every
    name (so ``{"input_ids", "masked_positions"}`` skips an optional ``attention_mask``
    between them), else positionally in the dict's order."""
    params: Mapping[str, inspect.Parameter] = {}
    with contextlib.suppress(TypeError, ValueError):  # a forward with no readable signature
        params = inspect.signature(model.forward).parameters
    named = all(n in params and params[n].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)
                for n in names)
    if named and len(names) > 1:
        return model(**{n: kw[n] for n in names})
    return model(*(kw[n] for n in names))


def trace_loss(model: Module, inputs: Mapping[str, InputSpec], target: InputSpec | None,
               loss: str | LossFn, metrics: Mapping[str, LossFn], *, training: bool,
               sync_batch_norm: bool = False) -> Graph:
    """Trace ``model`` followed by its loss and metrics into one graph (outputs loss, metrics).

    ``sync_batch_norm``: training-mode batch norms all-reduce their statistics over the
    data-parallel ranks (``all_reduce`` nodes, group "data")."""
    lfn = _loss_fn(loss)
    names = list(inputs)

    def with_loss(**kw: Tensor) -> dict[str, Tensor]:
        y = kw.pop("y") if target is not None else None
        out = _call(model, names, kw)
        target_t = y if y is not None else kw[names[0]]  # no target: reconstruct the input
        res = {"loss": lfn(out, target_t)}
        res.update((k, f(out, target_t)) for k, f in metrics.items())
        return res

    specs: dict[str, InputSpec] = dict(inputs)
    if target is not None:
        specs["y"] = target
    with sync_bn() if sync_batch_norm else contextlib.nullcontext():
        return trace(with_loss, specs, name=type(model).__name__, training=training,
                     module=model)


def target_spec(y: Any) -> InputSpec | None:
    """The symbolic-batch spec of the targets (None without targets)."""
    return InputSpec(("N", *np.shape(y)[1:]), np.asarray(y).dtype, "y") if y is not None else None


def loss_graphs(model: Module | Graph, x: Any, y: Any, loss: str | LossFn,
                mfns: Mapping[str, LossFn], output: str | None = None,
                sync_batch_norm: bool = False) -> tuple[Graph, Graph]:
    """The model followed by its loss and metrics, in training and in eval mode
    (``sync_batch_norm``: the training graph's batch norms all-reduce their statistics)."""
    if isinstance(model, Graph):
        if sync_batch_norm:
            raise InputError("sync_batch_norm needs a Module (an imported graph's batch norms "
                             "are in evaluation mode)")
        return graph_losses(model, y, _loss_fn(loss), mfns, output)
    data, target = _as_inputs(x), target_spec(y)
    return (trace_loss(model, _specs(data), target, loss, mfns, training=True,
                       sync_batch_norm=sync_batch_norm),
            trace_loss(model, _specs(data), target, loss, mfns, training=False))
