"""Linear fusion: ``matmul(x, w) + b`` and a following activation become one ``linear`` node.

``linear(x, w, b, activation)`` computes ``activation(x @ w + b)`` with ``w`` of shape
(in, out), as ONNX Gemm with transB=0 (see :data:`lbdl_graph.ops.linear`). The weight must be
2-D and the bias must broadcast over the rows only (``[out]``, ``[1]`` or a scalar), so the fused
node has the type of the add it replaces.
"""

from __future__ import annotations

from lbdl_graph import ops
from lbdl_graph.graph import Graph, Node, Value

from .base import PassResult
from .rewrite import P, Rule, RuleSet, operands, pat, rewrite_to_fixpoint, try_infer

__all__ = ["LINEAR_RULES", "fuse_linear"]

_GELU = {"none": "gelu", "tanh": "gelu_tanh"}


def _matmul_add(x: Value, w: Value, b: Value, root: Node) -> Value | None:
    if try_infer(ops.linear, x, w, b) != root.outputs[0].type:
        return None
    return ops.linear(x, w, b)


def _activation(x: Value, w: Value, b: Value | None, root: Node) -> Value | None:
    act = "relu" if root.op is ops.relu else _GELU.get(root.attrs.get("approximate", ""))
    if act is None:
        return None
    return ops.linear(*operands(x, w, b), activation=act)


x, w, b = P.var("x"), P.var("w", where=lambda v: v.ndim == 2), P.var("b")
b_opt = P.var("b", optional=True)

LINEAR_RULES = RuleSet("fuse_linear", [
    # matmul(x, w) + b -> linear(x, w, b)   (b + matmul(x, w) too: add is commutative)
    Rule("matmul_add_to_linear", pat.add(pat.matmul(x, w), b, bind="root"), _matmul_add),
    # relu(linear(x, w, b)) -> linear(x, w, b, activation='relu')
    Rule("linear_relu", pat.relu(pat.linear(x, w, b_opt, activation="none"), bind="root"),
         _activation),
    # gelu(linear(x, w, b)) -> linear(x, w, b, activation='gelu' or 'gelu_tanh')
    Rule("linear_gelu", pat.gelu(pat.linear(x, w, b_opt, activation="none"), bind="root"),
         _activation),
])


def fuse_linear(graph: Graph) -> PassResult:
    """Fuse matmul + bias (+ relu/gelu) into ``linear`` nodes. Pure and idempotent."""
    return rewrite_to_fixpoint(graph, LINEAR_RULES)
