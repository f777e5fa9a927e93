"""Attention fusion: ``softmax(q @ k^T * scale + mask) @ v`` becomes one ``attention`` node.

The scale may be a multiplication, a division (``scale = 1/c``) or absent (1); the mask an
additive tensor or absent. ``k^T`` must be a transpose (when it does more than swap the last
two axes, ``k`` becomes a transpose of its input with those two swapped back) and the softmax
must run over the last axis. A constant mask that is 0 on and below the diagonal
and -inf (or below -1e9) above it becomes ``causal=True``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import (
    P,
    Pat,
    Pattern,
    Rule,
    RuleSet,
    constant_value,
    operands,
    pat,
    rewrite_to_fixpoint,
    try_infer,
)

__all__ = ["ATTENTION_RULES", "fuse_attention", "is_causal_mask"]


def is_causal_mask(mask: np.ndarray) -> bool:
    """True for a square additive mask: 0 at and below the diagonal, <= -1e9 above it."""
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2] or mask.dtype.kind not in "fV":
        return False
    m = np.asarray(mask, dtype=np.float64).reshape((-1, *mask.shape[-2:]))
    above = np.triu(np.ones(mask.shape[-2:], dtype=bool), k=1)
    return bool(np.all(m[:, ~above] == 0) and np.all(m[:, above] <= -1e9))


def _key_operand(ks: Value, kt: Node) -> Value:
    """``k`` such that ``kt == transpose(k)`` over the last two axes: ``kt``'s input when its
    perm swaps them, else a transpose of that input by the perm with the last two swapped."""
    n = ks.ndim
    perm = tuple(range(n))[::-1] if kt.attrs["perm"] is None else \
        tuple(a % n for a in kt.attrs["perm"])
    k_perm = (*perm[:-2], perm[-1], perm[-2])
    if k_perm == tuple(range(n)):
        return ks
    return ops.transpose(ks, perm=k_perm)  # type: ignore[no-any-return]


def _attention(scale_op: str) -> Callable[..., Value | None]:
    def replace(q: Value, ks: Value, v: Value, kt: Node, sm: Node, root: Node,
                c: Value | None = None, mask: Value | None = None) -> Value | None:
        rank = sm.outputs[0].ndim
        if ks.ndim < 2 or sm.attrs["axis"] % rank != rank - 1:
            return None
        scale = 1.0
        if c is not None:
            arr = constant_value(c)
            if arr is None or arr.size != 1:
                return None
            value = float(np.asarray(arr, dtype=np.float64).reshape(()))
            scale = value if scale_op == "mul" else 1.0 / value
        causal = False
        if mask is not None:
            data = constant_value(mask)
            if data is not None and is_causal_mask(data) and mask.ndim <= sm.outputs[0].ndim:
                mask, causal = None, True
        attrs = {"scale": scale, "causal": causal}
        k = _key_operand(ks, kt)
        if try_infer(ops.attention, q, k, v, mask, **attrs) != root.outputs[0].type:
            return None
        return ops.attention(*operands(q, k, v, mask), **attrs)  # type: ignore[no-any-return]

    return replace


def _pattern(scale_op: str, masked: bool) -> Pat:
    scores: Pattern = pat.matmul(P.var("q"), pat.transpose(P.var("ks"), bind="kt"))
    if scale_op != "none":
        scores = Pat(ops.mul if scale_op == "mul" else ops.div, scores, P.const("c"))
    if masked:
        scores = pat.add(scores, P.var("mask"))
    return pat.matmul(pat.softmax(scores, bind="sm"), P.var("v"), bind="root")


ATTENTION_RULES = RuleSet("fuse_attention", [
    # softmax(q @ k^T * c + mask) @ v -> attention(q, k, v, mask, scale=c)
    Rule(f"attention_{scale}_scale{'_mask' if masked else ''}", _pattern(scale, masked),
         _attention(scale))
    for scale in ("mul", "div", "none") for masked in (True, False)
])


def fuse_attention(graph: Graph) -> PassResult:
    """Replace softmax(QK^T * scale + mask) V subgraphs by ``attention`` nodes."""
    return rewrite_to_fixpoint(graph, ATTENTION_RULES)
