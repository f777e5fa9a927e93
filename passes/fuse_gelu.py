"""GELU fusion: the erf and tanh formulas written out with elementwise ops become ``gelu``.

::

    0.5 * x * (1 + erf(x / sqrt(2)))                              -> gelu(x)
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))      -> gelu(x, approximate='tanh')

Products are matched in each association order (``(0.5*x)*y``, ``x*(0.5*y)``, ``(x*y)*0.5``
and ``(x*y)/2``), operands in either order, ``x / sqrt(2)`` or ``x * (1/sqrt(2))`` and ``x**3``
or ``x*(x*x)``. Constants match to a few ulps of their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ml_dtypes
import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import dtype
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import P, Pat, Pattern, Rule, RuleSet, pat, rewrite_to_fixpoint

__all__ = ["GELU_RULES", "fuse_gelu"]


def close_to(value: float) -> Callable[[np.ndarray], bool]:
    """A predicate on constants: a single element within a few ulps of ``value``."""

    def check(arr: np.ndarray) -> bool:
        if arr.size != 1 or not dtype(arr.dtype).is_float:
            return False
        v = float(np.asarray(arr, dtype=np.float64).reshape(()))
        eps = max(float(ml_dtypes.finfo(arr.dtype).eps), 2.0**-23)
        return abs(v - value) <= 4 * eps * abs(value)

    return check


def _c(value: float) -> Pattern:
    return P.const(where=close_to(value))


def _products(x: Pattern, y: Pattern) -> list[Pattern]:
    """``0.5 * x * y`` in every association order."""
    half = _c(0.5)
    return [pat.mul(pat.mul(x, half), y), pat.mul(x, pat.mul(y, half)),
            pat.mul(pat.mul(x, y), half), pat.div(pat.mul(x, y), _c(2.0))]


def _gelu(approximate: str) -> Callable[[Value, Node], Value | None]:
    def replace(x: Value, root: Node) -> Value | None:
        if not x.dtype.is_float or x.type != root.outputs[0].type:
            return None
        return ops.gelu(x, approximate=approximate)

    return replace


x = P.var("x")
_ERF_ARGS = {"div": pat.div(x, _c(math.sqrt(2.0))), "mul": pat.mul(x, _c(math.sqrt(0.5)))}
_CUBES = {"pow": pat.pow(x, _c(3.0)), "mul": pat.mul(x, pat.mul(x, x))}
_ORDERS = ("half_x", "x_half", "xy_half", "xy_div2")


def _erf_rules() -> list[Rule]:
    rules = []
    for arg_name, arg in _ERF_ARGS.items():
        one_plus = pat.add(pat.erf(arg), _c(1.0))
        for order, p in zip(_ORDERS, _products(x, one_plus), strict=True):
            # 0.5 * x * (1 + erf(x / sqrt(2))) -> gelu(x)
            rules.append(Rule(f"gelu_erf_{arg_name}_{order}", _rooted(p), _gelu("none")))
    return rules


def _tanh_rules() -> list[Rule]:
    rules = []
    for cube_name, cube in _CUBES.items():
        inner = pat.mul(_c(math.sqrt(2.0 / math.pi)), pat.add(x, pat.mul(_c(0.044715), cube)))
        one_plus = pat.add(pat.tanh(inner), _c(1.0))
        for order, p in zip(_ORDERS, _products(x, one_plus), strict=True):
            # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> gelu(x, 'tanh')
            rules.append(Rule(f"gelu_tanh_{cube_name}_{order}", _rooted(p), _gelu("tanh")))
    return rules


def _rooted(p: Pattern) -> Pat:
    assert isinstance(p, Pat)
    return Pat(p.ops, *p.args, bind="root", **p.attrs)


GELU_RULES = RuleSet("fuse_gelu", _erf_rules() + _tanh_rules())


def fuse_gelu(graph: Graph) -> PassResult:
    """Replace written-out GELU formulas by ``gelu`` nodes. Pure and idempotent."""
    return rewrite_to_fixpoint(graph, GELU_RULES)
