"""Convolution fusion: conv + residual add + relu become one ``fused_conv`` node.

``fused_conv(x, w, b, residual, activation)`` computes ``activation(conv(x, w, b) + residual)``
(see :data:`lbdl_graph.ops.fused_conv`). The add must not grow the convolution's output (the
residual broadcasts into it), so the fused node has the type of what it replaces. Rules compose:
``relu(conv(x) + r)`` fires ``conv_add_to_fused_conv`` at the add, then ``fused_conv_relu``.
"""

from __future__ import annotations

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import P, Rule, RuleSet, operands, pat, rewrite_to_fixpoint, try_infer

__all__ = ["CONV_RULES", "fuse_conv"]


def _conv_add(x: Value, w: Value, b: Value | None, r: Value, conv: Node,
              root: Node) -> Value | None:
    if try_infer(ops.fused_conv, x, w, b, r, **conv.attrs) != root.outputs[0].type:
        return None
    return ops.fused_conv(*operands(x, w, b, r), **conv.attrs)


def _conv_relu(x: Value, w: Value, b: Value | None, conv: Node) -> Value:
    return ops.fused_conv(*operands(x, w, b), **conv.attrs, activation="relu")


def _fused_relu(x: Value, w: Value, b: Value | None, r: Value | None, conv: Node) -> Value:
    attrs = {**conv.attrs, "activation": "relu"}
    return ops.fused_conv(*operands(x, w, b, r), **attrs)


x, w, r = P.var("x"), P.var("w"), P.var("r")
b_opt, r_opt = P.var("b", optional=True), P.var("r", optional=True)
conv = pat.conv(x, w, b_opt, bind="conv")

CONV_RULES = RuleSet("fuse_conv", [
    # conv(x, w, b) + r -> fused_conv(x, w, b, r)
    Rule("conv_add_to_fused_conv", pat.add(conv, r, bind="root"), _conv_add),
    # relu(conv(x, w, b)) -> fused_conv(x, w, b, activation='relu')
    Rule("conv_relu_to_fused_conv", pat.relu(conv), _conv_relu),
    # relu(fused_conv(x, w, b, r)) -> fused_conv(x, w, b, r, activation='relu')
    Rule("fused_conv_relu",
         pat.relu(pat.fused_conv(x, w, b_opt, r_opt, activation="none", bind="conv")),
         _fused_relu),
])


def fuse_conv(graph: Graph) -> PassResult:
    """Fuse convolutions with their residual add and relu. Pure and idempotent."""
    return rewrite_to_fixpoint(graph, CONV_RULES)
