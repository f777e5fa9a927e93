"""Reverse-mode automatic differentiation as a graph-to-graph pass.

``grad(graph, "loss", ["w", "x"])`` returns an ordinary graph: the original outputs plus one
output ``grad:<name>`` per ``wrt`` value, built from the VJP rules in :data:`VJPS`
(``rules_*.py``, one module per op group) by the driver (``driver.py``). Because the result is
plain IR, it can be differentiated again: Hessian-vector products and gradient penalties are
``grad`` of a graph that already contains gradients.

If the name ``grad:<name>`` is already taken (differentiating a gradient graph again), the new
output gets a suffix (``grad:w_1``); ``graph.metadata["grads"]`` maps each wrt name to its
output name.
"""

from __future__ import annotations

from collections.abc import Sequence

from lbdl_graph.analysis import prune_unused
from lbdl_graph.graph import Graph

from . import (
    rules_bn_train,
    rules_control,
    rules_dynamic,
    rules_elementwise,
    rules_index,
    rules_nn,
    rules_norm,
    rules_quant,
    rules_reduce,
    rules_scan,
    rules_shape,
)
from .driver import active_values, backprop, differentiate, sum_to
from .table import VJPS, VjpRule

__all__ = [
    "VJPS",
    "VjpRule",
    "active_values",
    "backprop",
    "differentiate",
    "grad",
    "sum_to",
    "value_and_grad",
]

_RULE_MODULES = (rules_bn_train, rules_control, rules_dynamic, rules_elementwise, rules_index,
                 rules_nn, rules_norm, rules_quant, rules_reduce, rules_scan, rules_shape)


def grad(graph: Graph, loss: str = "loss", wrt: str | Sequence[str] | None = None, *,
         allow_unused: bool = False) -> Graph:
    """``graph`` plus the gradient of the scalar output ``loss`` w.r.t. each ``wrt`` name.

    Args:
        graph: a verified graph with a scalar float output (or value) named ``loss``.
        loss: the name of the value to differentiate.
        wrt: input, parameter or value names; default: every trainable float parameter.
            Frozen parameters (``trainable=False``) are constants and cannot be named.
        allow_unused: return zeros for a ``wrt`` value the loss does not depend on instead of
            raising :class:`~lbdl_graph.errors.AutodiffError`.

    Returns:
        A new graph with the original outputs followed by one output ``grad:<name>`` per
        ``wrt`` value, of that value's type.
    """
    return differentiate(graph, loss, wrt, allow_unused=allow_unused).graph


def value_and_grad(graph: Graph, loss: str = "loss", wrt: str | Sequence[str] | None = None, *,
                   allow_unused: bool = False) -> Graph:
    """Like :func:`grad`, but the outputs are only ``loss`` and the gradients (a training-step
    core); nodes and parameters that they do not need are dropped."""
    g = differentiate(graph, loss, wrt, allow_unused=allow_unused).graph
    names = set(g.metadata["grads"].values())
    loss_v = next((v for v in graph.outputs if v.name == loss), None) or graph.values[loss]
    return prune_unused(g.replace(outputs=[loss_v, *(v for v in g.outputs if v.name in names)]))
