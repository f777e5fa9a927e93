"""Batch-norm folding for inference: ``batch_norm(conv(x, w, b))`` becomes ``conv(x, w', b')``.

With ``s = scale / sqrt(var + epsilon)`` per output channel,
``w' = w * s`` (broadcast over the channel axis 0 of the weight) and ``b' = (b - mean) * s + bias``.
It applies when the weight, bias and the four statistics are parameters or constants: their
current data is folded (in float64, then rounded to the weight's dtype) into new parameters
(trainable like the conv weight) or constants. The replaced parameters are dropped when nothing
else uses them. Batch norm in this IR is the inference form (given statistics), so this is exact
up to rounding.
"""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import P, Rule, RuleSet, new_param, param_of, pat, rewrite_to_fixpoint, static_value

__all__ = ["BATCH_NORM_RULES", "fold_batch_norm"]


def _static(data: np.ndarray, like: Value, suffix: str) -> Value:
    """New folded data as a parameter when ``like`` is one, else as a constant."""
    p = param_of(like)
    if p is None:
        return ops.constant(value=data)
    return new_param(f"{like.name}.{suffix}", data, trainable=p.trainable)


def _fold(x: Value, w: Value, b: Value | None, scale: Value, bias: Value, mean: Value,
          var: Value, conv: Node, bn: Node) -> Value | None:
    arrays = [static_value(v) for v in (w, scale, bias, mean, var)]
    b_data = static_value(b) if b is not None else np.zeros(w.shape[0], dtype=w.dtype.numpy)
    if b_data is None or any(a is None for a in arrays):
        return None
    w_data, s_data, beta, mu, sigma2 = (np.asarray(a, dtype=np.float64) for a in arrays)
    with np.errstate(all="ignore"):  # a negative variance gives NaN, as batch_norm itself
        s = s_data / np.sqrt(sigma2 + bn.attrs["epsilon"])
    new_w = (w_data * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype.numpy)
    new_b = ((b_data.astype(np.float64) - mu) * s + beta).astype(w.dtype.numpy)
    folded_w = _static(new_w, w, "folded")
    folded_b = _static(new_b, w, "folded_bias") if b is None else _static(new_b, b, "folded")
    return ops.conv(x, folded_w, folded_b, **conv.attrs)


x, w = P.var("x"), P.var("w")
stats = {name: P.var(name) for name in ("scale", "bias", "mean", "var")}

BATCH_NORM_RULES = RuleSet("fold_batch_norm", [
    # batch_norm(conv(x, w, b), scale, bias, mean, var) -> conv(x, w', b')
    Rule("conv_batch_norm",
         pat.batch_norm(pat.conv(x, w, P.var("b", optional=True), bind="conv"),
                        *stats.values(), bind="bn"), _fold),
])


def fold_batch_norm(graph: Graph) -> PassResult:
    """Fold inference batch norms into the convolutions before them. Pure and idempotent."""
    return rewrite_to_fixpoint(graph, BATCH_NORM_RULES)
