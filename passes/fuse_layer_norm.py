"""LayerNorm fusion: the written-out normalisation becomes one ``layer_norm`` node.

::

    m = mean(x, axes); d = x - m; v = mean(d**2 or d*d, axes)
    (d / sqrt(v + eps)) * gamma + beta                       -> layer_norm(x, gamma, beta)

The reduced axes must be the trailing ones (``axis=a`` normalises axes ``a..rank-1``), kept
with ``keepdims``, and ``gamma``/``beta`` must have the normalised shape. Rules compose, one per
stage: the bare normalisation (static normalised shape: scale 1), then the scale, then the shift,
so every prefix of the formula fuses too.
"""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import (
    P,
    Pat,
    Rule,
    RuleSet,
    constant_value,
    pat,
    rewrite_to_fixpoint,
    try_infer,
)

__all__ = ["LAYER_NORM_RULES", "fuse_layer_norm"]


def _axis(x: Value, m1: Node, m2: Node) -> int | None:
    """The layer_norm axis when both means reduce the same trailing axes with keepdims."""
    axes = [m.attrs["axes"] for m in (m1, m2)]
    if not all(m.attrs["keepdims"] for m in (m1, m2)) or axes[0] is None or axes[1] is None:
        return None
    norm = [sorted(a % x.ndim for a in ax) for ax in axes]
    if norm[0] != norm[1] or not norm[0] or norm[0] != list(range(norm[0][0], x.ndim)):
        return None
    return norm[0][0] - x.ndim


def _epsilon(eps: Value) -> float | None:
    arr = constant_value(eps)
    if arr is None or arr.size != 1:
        return None
    return float(np.asarray(arr, dtype=np.float64).reshape(()))


def _norm(x: Value, eps: Value, m1: Node, m2: Node, root: Node, gamma: Value | None = None
          ) -> Value | None:
    axis, epsilon = _axis(x, m1, m2), _epsilon(eps)
    if axis is None or epsilon is None or not x.dtype.is_float:
        return None
    if gamma is None:  # scale 1 needs the normalised shape as literal dims
        shape = x.shape[axis:]
        if not all(isinstance(d, int) for d in shape):
            return None
        gamma = ops.constant(value=np.ones(shape, dtype=x.dtype.numpy))
    if try_infer(ops.layer_norm, x, gamma, axis=axis, epsilon=epsilon) != root.outputs[0].type:
        return None
    # the absent bias is spelled out: kernels take it positionally
    return ops.layer_norm(x, gamma, None, axis=axis, epsilon=epsilon)


def _scale(x: Value, gamma: Value, ln: Node, root: Node) -> Value | None:
    if try_infer(ops.layer_norm, x, gamma, **ln.attrs) != root.outputs[0].type:
        return None
    return ops.layer_norm(x, gamma, None, **ln.attrs)


def _shift(x: Value, gamma: Value, beta: Value, ln: Node, root: Node) -> Value | None:
    if try_infer(ops.layer_norm, x, gamma, beta, **ln.attrs) != root.outputs[0].type:
        return None
    return ops.layer_norm(x, gamma, beta, **ln.attrs)


def _normalised(square: str, root: bool) -> Pat:
    d = pat.sub(x, pat.reduce_mean(x, bind="m1"))
    sq = pat.pow(d, 2.0) if square == "pow" else pat.mul(d, d)
    std = pat.sqrt(pat.add(pat.reduce_mean(sq, bind="m2"), P.const("eps")))
    return pat.div(d, std, **({"bind": "root"} if root else {}))


x, gamma, beta = P.var("x"), P.var("gamma"), P.var("beta")
_ln_scale_1 = pat.layer_norm(x, P.const("one", value=1.0), None, bind="ln")

LAYER_NORM_RULES = RuleSet("fuse_layer_norm", [
    # (x - m) / sqrt(mean((x - m)**2) + eps) -> layer_norm(x, 1)
    Rule("layer_norm_pow", _normalised("pow", root=True), _norm),
    # (x - m) / sqrt(mean((x - m)*(x - m)) + eps) -> layer_norm(x, 1)
    Rule("layer_norm_mul", _normalised("mul", root=True), _norm),
    # normalised(x) * gamma -> layer_norm(x, gamma)   (for symbolic normalised shapes)
    Rule("layer_norm_pow_scale", Pat(ops.mul, _normalised("pow", False), gamma, bind="root"),
         _norm),
    Rule("layer_norm_mul_scale", Pat(ops.mul, _normalised("mul", False), gamma, bind="root"),
         _norm),
    # layer_norm(x, 1) * gamma -> layer_norm(x, gamma)
    Rule("layer_norm_scale", pat.mul(_ln_scale_1, gamma, bind="root"),
         lambda x, one, gamma, ln, root: _scale(x, gamma, ln, root)),
    # layer_norm(x, gamma) + beta -> layer_norm(x, gamma, beta)
    Rule("layer_norm_shift", pat.add(pat.layer_norm(x, gamma, None, bind="ln"), beta,
                                     bind="root"), _shift),
])


def fuse_layer_norm(graph: Graph) -> PassResult:
    """Replace written-out layer normalisations by ``layer_norm`` nodes. Pure and idempotent."""
    return rewrite_to_fixpoint(graph, LAYER_NORM_RULES)
