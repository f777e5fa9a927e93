"""Attention fusion: ``softmax(q @ k^T * scale + mask) @ v`` becomes one ``attention`` node.

The scale may be a multiplication, a division (``scale = 1/c``) or absent (1); the mask an
additive tensor or absent. ``k^T`` must be a transpose (when it does more than swap the last
two axes, ``k`` becomes a transpose of its input with those two swapped back) and the softmax
must run over the last axis. A constant mask that is 0 on and below the diagonal
and -inf (or below -1e9) above it becomes ``causal=True``, and so does the mask the DSL builds
from the scores' shape (a symbolic sequence length needs it)::

    where(iota_like(s, axis=-1) <= iota_like(s, axis=-2), s, low)     # low <= -1e9

(also ``>=`` with the operands swapped, and ``where(hide, low, s)`` with ``>`` or ``<``;
``low`` may also be the dtype's lowest value, as float16's -65504). A finite ``low`` gives the
same weights as -inf as long as some key of each row is visible, which causal masking
guarantees (key 0); so an additive mask next to it must be a finite constant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
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
    return ops.transpose(ks, perm=k_perm)


# the iota compared first, for each comparison: where(cmp(i1, i2), s, low) keeps when true,
# where(cmp(i1, i2), low, s) hides when true; -1 is the key axis, -2 the query axis
_FIRST_IOTA = {"less_equal": -1, "greater_equal": -2, "greater": -1, "less": -2}


def _where_is_causal(rank: int, i1: Node, i2: Node, cmp: Node, low: Value) -> bool:
    """True if the where node's condition and fill make it a causal mask."""
    axes = [i.attrs["axis"] for i in (i1, i2)]
    if None in axes:
        return False
    first = _FIRST_IOTA[cmp.op.name] % rank
    if [a % rank for a in axes] != [first, (rank - 1) + (rank - 2) - first]:
        return False
    arr = constant_value(low)
    if arr is None or arr.size != 1 or arr.dtype.kind not in "fV":
        return False
    value = float(np.asarray(arr, np.float64).reshape(()))
    return value <= -1e9 or value <= float(ml_dtypes.finfo(arr.dtype).min)  # float16: -65504


def _attention(scale_op: str) -> Callable[..., Value | None]:
    def replace(q: Value, ks: Value, v: Value, kt: Node, sm: Node, root: Node,
                c: Value | None = None, mask: Value | None = None, i1: Node | None = None,
                i2: Node | None = None, cmp: Node | None = None, low: Value | None = None
                ) -> Value | None:
        rank = sm.outputs[0].ndim
        if ks.ndim < 2 or sm.attrs["axis"] % rank != rank - 1:
            return None
        by_where = i1 is not None and i2 is not None and cmp is not None and low is not None
        if by_where and not _where_is_causal(rank, i1, i2, cmp, low):  # type: ignore[arg-type]
            return None
        scale = 1.0
        if c is not None:
            arr = constant_value(c)
            if arr is None or arr.size != 1:
                return None
            value = float(np.asarray(arr, dtype=np.float64).reshape(()))
            scale = value if scale_op == "mul" else 1.0 / value
        causal = by_where
        if mask is not None:
            data = constant_value(mask)
            if data is not None and is_causal_mask(data) and mask.ndim <= sm.outputs[0].ndim:
                mask, causal = None, True
            elif by_where and (data is None or not np.isfinite(data).all()):
                return None  # a row of -inf could leave no visible key
        attrs: dict[str, Any] = {"scale": scale, "causal": causal}
        k = _key_operand(ks, kt)
        if try_infer(ops.attention, q, k, v, mask, **attrs) != root.outputs[0].type:
            return None
        return ops.attention(*operands(q, k, v, mask), **attrs)

    return replace


def _pattern(scale_op: str, masked: bool, where: str | None = None) -> Pat:
    scores: Pattern = pat.matmul(P.var("q"), pat.transpose(P.var("ks"), bind="kt"))
    if scale_op != "none":
        scores = Pat(ops.mul if scale_op == "mul" else ops.div, scores, P.const("c"))
    if masked:
        scores = pat.add(scores, P.var("mask"))
    if where is not None:  # the same sub-pattern object three times: the same value
        cmps = (ops.less_equal, ops.greater_equal) if where == "keep" else (ops.greater, ops.less)
        cond = Pat(cmps, pat.iota_like(scores, bind="i1"), pat.iota_like(scores, bind="i2"),
                   bind="cmp")
        low = P.const("low")
        scores = pat.where(cond, scores, low) if where == "keep" else \
            pat.where(cond, low, scores)
    return pat.matmul(pat.softmax(scores, bind="sm"), P.var("v"), bind="root")


ATTENTION_RULES = RuleSet("fuse_attention", [
    # softmax(q @ k^T * c + mask) @ v -> attention(q, k, v, mask, scale=c)
    Rule(f"attention_{scale}_scale{'_mask' if masked else ''}", _pattern(scale, masked),
         _attention(scale))
    for scale in ("mul", "div", "none") for masked in (True, False)
] + [
    # softmax(where(causal, q @ k^T * c + mask, low)) @ v -> attention(..., causal=True)
    Rule(f"attention_{scale}_scale{'_mask' if masked else ''}_where_{where}",
         _pattern(scale, masked, where), _attention(scale))
    for scale in ("mul", "div", "none") for masked in (True, False) for where in ("keep", "hide")
])


def fuse_attention(graph: Graph) -> PassResult:
    """Replace softmax(QK^T * scale + mask) V subgraphs by ``attention`` nodes."""
    return rewrite_to_fixpoint(graph, ATTENTION_RULES)
