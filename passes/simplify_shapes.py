"""Shape simplification: drop shape ops that give back their input unchanged.

reshape, squeeze, unsqueeze and expand never reorder data, so any of them (or a chain of
squeeze/unsqueeze) whose result has the input's type is the identity. Slices, tiles, pads and
transposes need a closer look at their attributes.
"""

from __future__ import annotations

from collections.abc import Callable

from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import OpDef
from lbdl_graph.ops import (
    concat,
    expand,
    pad,
    reshape,
    slice_,
    squeeze,
    tile,
    transpose,
    unsqueeze,
)
from lbdl_graph.shapes import normalize_axis

from .base import PassResult
from .rewrite import P, Pat, Rule, RuleSet, pat, rewrite_to_fixpoint

__all__ = ["SHAPE_RULES", "simplify_shapes"]


def _same(check: Callable[[Node], bool] = lambda node: True
          ) -> Callable[[Value, Node], Value | None]:
    """A replacement giving ``x`` when the root keeps x's type and ``check(root)`` holds."""

    def replace(x: Value, root: Node) -> Value | None:
        return x if x.type == root.outputs[0].type and check(root) else None

    return replace


def _unit_steps(node: Node) -> bool:
    steps = node.attrs["steps"]
    return steps is None or all(s == 1 for s in steps)


def _no_padding(node: Node) -> bool:
    return all(p == 0 for p in node.attrs["pads"])


def _identity_perm(node: Node) -> bool:
    x = node.inputs[0]
    perm = node.attrs["perm"]
    if x is None:
        return False
    if perm is None:
        return x.ndim <= 1
    return tuple(normalize_axis(a, x.ndim) for a in perm) == tuple(range(x.ndim))


def _same_rule(name: str, op: OpDef, check: Callable[[Node], bool] = lambda node: True) -> Rule:
    return Rule(name, Pat(op, x, bind="root"), _same(check))


x = P.var("x")
_VIEW = (squeeze, unsqueeze)

SHAPE_RULES = RuleSet("simplify_shapes", [
    # reshape(x, shape of x) -> x
    _same_rule("reshape_same", reshape),
    # squeeze(x) with no size-1 axis -> x
    _same_rule("squeeze_same", squeeze),
    # expand(x, shape) that broadcasts nothing -> x
    _same_rule("expand_same", expand),
    # broadcast_like(x, y) that broadcasts nothing -> x
    Rule("broadcast_like_same", pat.broadcast_like(x, P.var("like"), bind="root"),
         lambda x, like, root: _same()(x, root)),
    # slice(x) taking every element with step 1 -> x
    _same_rule("slice_full", slice_, _unit_steps),
    # tile(x, repeats=(1, ...)) -> x
    _same_rule("tile_ones", tile),
    # pad(x, pads=(0, ...)) -> x
    _same_rule("pad_zero", pad, _no_padding),
    # transpose(x, perm=(0, 1, ...)) -> x
    _same_rule("transpose_identity", transpose, _identity_perm),
    # concat(x) of a single input -> x
    _same_rule("concat_single", concat),
    # squeeze(unsqueeze(x)) -> x   (also squeeze(squeeze(x)) when that gives back x's shape)
    Rule("squeeze_unsqueeze", Pat(squeeze, Pat(_VIEW, x), bind="root"), _same(), shared=True),
    # unsqueeze(squeeze(x)) -> x   (the squeezed axes had size 1)
    Rule("unsqueeze_squeeze", Pat(unsqueeze, Pat(_VIEW, x), bind="root"), _same(), shared=True),
])


def simplify_shapes(graph: Graph) -> PassResult:
    """Apply :data:`SHAPE_RULES` to a fixpoint. Pure and idempotent."""
    return rewrite_to_fixpoint(graph, SHAPE_RULES)
