"""Training a Graph (an imported ONNX model, a saved graph) rather than a Module.

A graph has named parameters but no ``forward`` to call, so its loss is attached to one of its
outputs: :func:`attach_loss` builds ``graph`` followed by ``loss(graph.<output>, y)`` (and the
metrics), where ``y`` is a new graph input named ``y`` whose spec comes from the targets (its
leading dim is the output's, so a fixed-batch graph keeps a fixed batch). With one output the
loss reads it; with several, name it with ``output=``. Losses and metrics are the same as for
modules (``LOSSES``, ``METRICS`` or callables ``(out, y) -> Tensor``); ``y=None`` reconstructs
the first input. Every trainable parameter of the graph is trained, under its own name.

Before that, :func:`prepare_graph` ties parameters stored twice (bit-identical copies, e.g. a
legacy GPT-2 export's token table and its transpose; see :mod:`lbdl_graph.passes.tie_params`).
This is on by default (``tie_weights=True``) and the tied names are reported
(``History.tied``, ``graph.metadata["tied_params"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import InputError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.passes.tie_params import tie_params

from ..tensor import Tensor
from ..trace import InputSpec

__all__ = ["attach_loss", "check_batches", "fixed_batch", "graph_inputs", "graph_losses",
           "graph_target_spec", "prepare_graph"]

LossFn = Callable[[Any, Tensor], Tensor]


def prepare_graph(graph: Graph, tie_weights: bool = True) -> tuple[Graph, dict[str, str]]:
    """``graph`` with its twice-stored parameters tied (when ``tie_weights``) and the ties."""
    if not any(p.trainable for p in graph.params):
        raise InputError(f"graph '{graph.name}' has no trainable parameters to fine-tune")
    if not tie_weights:
        return graph, {}
    rep = tie_params(graph)
    return rep.graph, dict(rep.tied)


def _data_inputs(graph: Graph) -> list[Value]:
    rng = graph.metadata.get("rng_input")
    return [v for v in graph.inputs if v.name != rng]


def graph_inputs(graph: Graph, x: Any) -> dict[str, np.ndarray]:
    """The arrays of ``x`` (one array, or a dict by input name) checked against ``graph``'s
    inputs and converted to their dtypes."""
    wanted = _data_inputs(graph)
    if isinstance(x, Mapping):
        data = {str(k): np.asarray(v) for k, v in x.items()}
    elif len(wanted) == 1:
        data = {wanted[0].name: np.asarray(x)}
    else:
        raise InputError(f"graph '{graph.name}' has inputs {[v.name for v in wanted]}; pass x "
                         "as a dict of arrays by input name")
    missing = [v.name for v in wanted if v.name not in data]
    extra = sorted(set(data) - {v.name for v in wanted})
    if missing or extra:
        raise InputError(f"inputs do not match graph '{graph.name}': missing {missing}, "
                         f"unexpected {extra}")
    out: dict[str, np.ndarray] = {}
    for v in wanted:
        a, want = data[v.name], v.type.dtype.numpy
        if a.dtype != want and a.dtype.kind != np.dtype(want).kind:
            raise InputError(f"input '{v.name}' of graph '{graph.name}' is {v.type}; got "
                             f"{a.dtype} data")
        if a.ndim != len(v.shape) or any(isinstance(d, int) and d != s
                                         for d, s in zip(v.shape[1:], a.shape[1:], strict=False)):
            raise InputError(f"input '{v.name}' of graph '{graph.name}' is {v.type}; got "
                             f"samples of shape {list(a.shape)}")
        out[v.name] = a.astype(want, copy=False)
    return out


def _output(graph: Graph, output: str | None) -> Value:
    names = graph.output_names()
    if output is None:
        if len(names) != 1:
            raise InputError(f"graph '{graph.name}' has outputs {names}; name the one the loss "
                             "reads with output=")
        return graph.outputs[0]
    if output not in names:
        raise InputError(f"graph '{graph.name}' has no output {output!r}; outputs: {names}")
    return graph.outputs[names.index(output)]


def graph_target_spec(graph: Graph, y: Any, output: str | None = None) -> InputSpec | None:
    """The spec of the target input ``y``: y's per-sample shape and dtype, and the output's
    leading (batch) dim."""
    if y is None:
        return None
    arr = np.asarray(y)
    out = _output(graph, output)
    lead = out.shape[0] if out.shape and arr.ndim else "N"
    return InputSpec((lead, *arr.shape[1:]) if arr.ndim else (), dtype(arr.dtype), "y")


def fixed_batch(graph: Graph) -> int | None:
    """The static leading dim of the graph's data inputs, if they have one."""
    dims = {v.shape[0] for v in _data_inputs(graph) if v.shape}
    static = [d for d in dims if isinstance(d, int)]
    return static[0] if static else None


def check_batches(graph: Graph, batch_size: int, drop_last: bool,
                  counts: Mapping[str, int]) -> None:
    """A graph with a fixed batch needs ``batch_size`` equal to it and sample counts that are
    multiples of it (no partial last batch; ``drop_last`` drops the training one)."""
    fixed = fixed_batch(graph)
    if fixed is None:
        return
    bad = {k: n for k, n in counts.items() if n % fixed and not (drop_last and k == "training")}
    if batch_size != fixed or bad:
        raise InputError(f"graph '{graph.name}' has a fixed batch of {fixed}: use batch_size="
                         f"{fixed} (got {batch_size}) and sample counts that are multiples of "
                         f"it (got {dict(counts)})")


def attach_loss(graph: Graph, target: InputSpec | None, loss: LossFn,
                metrics: Mapping[str, LossFn], *, output: str | None = None,
                training: bool = True) -> Graph:
    """``graph`` followed by its loss and metrics: outputs ``loss`` and the metric names."""
    out_v = _output(graph, output)
    b = GraphBuilder.from_graph(graph)
    b.name = f"{graph.name}_loss"
    if target is not None and "y" in {v.name for v in graph.inputs}:
        raise InputError(f"graph '{graph.name}' already has an input 'y' (reserved for the "
                         "targets)")
    with b, b.scope("loss"), b.provenance("loss", "fit:loss"):
        if target is not None:
            y = Tensor(b.input("y", target.dtype, target.shape))
        else:
            y = Tensor(_data_inputs(graph)[0])  # no target: reconstruct the first input
        out = Tensor(out_v)
        res = {"loss": loss(out, y).value}
        res.update((k, f(out, y).value) for k, f in metrics.items())
    b.metadata["training"] = training
    return b.build(res, prune=True)


def graph_losses(graph: Graph, y: Any, loss: LossFn, metrics: Mapping[str, LossFn],
                 output: str | None = None) -> tuple[Graph, Graph]:
    """:func:`attach_loss` in training and in eval mode, the target spec taken from ``y``."""
    target = graph_target_spec(graph, y, output)
    return (attach_loss(graph, target, loss, metrics, output=output, training=True),
            attach_loss(graph, target, loss, metrics, output=output, training=False))
