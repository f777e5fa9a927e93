"""Causal masks as constants: the mask built from ``iota_like`` on every run becomes a constant.

::

    where(iota(s, -1) <= iota(s, -2), x, y)  -> where(tril[1.., L, S], x, y)   (L, S static)
    where(iota(s, -1) >  iota(s, -2), x, y)  -> where(triu1[1.., L, S], x, y)
    softmax(where(keep, s, lowest), -1)      -> softmax(s + bias, -1)   (keep a constant,
                                                bias = 0 where keep, the dtype's lowest else)

The first two rules are exact: the mask depends only on the scores' last two sizes, so with
those static it is a (1, ..., 1, L, S) bool constant that broadcasts in ``where``, instead of
Range, Reshape, LessOrEqual and Expand to the full (N, H, L, S) shape on every step.

The third turns the masking ``where`` (what ``F.attention`` writes, filling with the dtype's
lowest finite value) into an addition of a constant bias. Its backward is the cotangent itself
where ``where`` needed a second full-size ``where``, and ``add`` with a broadcast constant is
cheaper than ``where`` on ONNX Runtime's CPU provider. It gives the same softmax whenever the
scores are finite and below 2^103 in magnitude (half an ulp of the lowest float32): ``lowest +
s`` then rounds to ``lowest``, so masked entries are unchanged and ``exp`` of them is exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import P, Rule, RuleSet, constant_value, pat, rewrite_to_fixpoint, try_infer

__all__ = ["CAUSAL_MASK_RULES", "constant_causal_masks"]


def _static_tail(scores: Value) -> tuple[int, int, int] | None:
    """(rank, L, S) of the scores when rank >= 2 and the last two sizes are static."""
    shape = scores.type.shape
    if len(shape) < 2 or not all(isinstance(d, int) for d in shape[-2:]):
        return None
    return len(shape), int(shape[-2]), int(shape[-1])


def _iota_axes(col: Node, row: Node, rank: int) -> bool:
    """True if ``col`` indexes the last axis and ``row`` the one before it."""
    a, b = col.attrs.get("axis"), row.attrs.get("axis")
    return a is not None and b is not None and a % rank == rank - 1 and b % rank == rank - 2


def _mask(keep_lower: bool) -> Callable[..., Value | None]:
    def replace(s: Value, x: Value, y: Value, col: Node, row: Node, root: Node) -> Value | None:
        tail = _static_tail(s)
        if tail is None or not _iota_axes(col, row, tail[0]):
            return None
        rank, n_rows, n_cols = tail
        j = np.arange(n_cols)[None, :]
        i = np.arange(n_rows)[:, None]
        mask = (j <= i) if keep_lower else (j > i)
        const = ops.constant(value=mask.reshape((1,) * (rank - 2) + mask.shape))
        if try_infer(ops.where, const, x, y) != root.outputs[0].type:
            return None
        return ops.where(const, x, y)

    return replace


def _lowest(arr: np.ndarray) -> bool:
    return arr.size == 1 and arr.dtype.kind == "f" and float(arr.reshape(())) == float(
        np.finfo(arr.dtype).min)


def _bias(keep: Value, s: Value, low: Value, root: Node) -> Value | None:
    mask = constant_value(keep)
    low_v = constant_value(low)
    if mask is None or low_v is None or mask.dtype != np.bool_ or not s.dtype.is_float:
        return None
    axis = root.attrs.get("axis", -1)
    if axis is None or axis % s.ndim != s.ndim - 1 or low_v.dtype != s.dtype.numpy:
        return None
    bias = np.where(mask, np.zeros((), low_v.dtype), low_v.reshape(())).astype(low_v.dtype)
    added = ops.add(s, ops.constant(value=bias))
    if added.type != s.type:
        return None
    out: Value = ops.softmax(added, **root.attrs)
    return out


s, x, y = P.var("s"), P.var("x"), P.var("y")
_cols = pat.iota_like(s, bind="col")
_rows = pat.iota_like(s, bind="row")

CAUSAL_MASK_RULES = RuleSet("constant_causal_masks", [
    # where(iota(s, -1) <= iota(s, -2), x, y) -> where(tril constant, x, y)
    Rule("causal_keep_constant", pat.where(pat.less_equal(_cols, _rows), x, y, bind="root"),
         _mask(True)),
    # where(iota(s, -1) > iota(s, -2), x, y) -> where(strict upper constant, x, y)
    Rule("causal_drop_constant", pat.where(pat.greater(_cols, _rows), x, y, bind="root"),
         _mask(False)),
    # softmax(where(keep, s, lowest)) -> softmax(s + where(keep, 0, lowest))
    Rule("masked_softmax_bias", pat.softmax(pat.where(P.var("keep"), s,
                                                      P.const("low", where=_lowest)),
                                            bind="root"), _bias),
])


def constant_causal_masks(graph: Graph) -> PassResult:
    """Fold static causal masks into constants and masking ``where`` into a bias. Pure and
    idempotent."""
    return rewrite_to_fixpoint(graph, CAUSAL_MASK_RULES)
