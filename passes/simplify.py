"""Algebraic simplification: neutral elements, double negation, transpose/reshape/cast chains
and identities.

An identity that names a graph output (tracing adds one for every named output) is removed by
letting the node that computes its input write the output directly, when that input is a node
output that is not itself a graph output; the value then carries the output's name. An identity
that copies a graph input, a parameter or another output stays: one value has one name.

Each rule keeps the type of the value it replaces, so ``x * 1`` is only rewritten when the
constant does not broadcast ``x`` to a bigger shape or another dtype. ``x + 0 -> x`` turns
``-0.0 + 0.0 = +0.0`` into ``-0.0``, which compares equal; every other rule is exact.
"""

from __future__ import annotations

from dataclasses import replace

from lbdl_graph import ops
from lbdl_graph.dtypes import (
    DType,
    bfloat16,
    float8_e4m3fn,
    float16,
    float32,
    float64,
)
from lbdl_graph.errors import ShapeError
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.shapes import normalize_axis, reshape_shape

from .base import PassResult
from .rewrite import P, Rule, RuleSet, is_graph_output, pat, rewrite_to_fixpoint

__all__ = ["SIMPLIFY_RULES", "absorb_output_identities", "lossless_cast", "simplify"]

_FLOAT_WIDENING = {
    float8_e4m3fn: {float16, bfloat16, float32, float64},
    float16: {float32, float64},
    bfloat16: {float32, float64},
    float32: {float64},
}
_MANTISSA = {float64: 53, float32: 24, float16: 11, bfloat16: 8, float8_e4m3fn: 4}


def lossless_cast(src: DType, dst: DType) -> bool:
    """True if every value of ``src`` is represented exactly in ``dst``."""
    if src == dst or src.is_bool:
        return True
    if dst.is_bool:
        return False
    if src.is_float:
        return dst in _FLOAT_WIDENING.get(src, set())
    if dst.is_float:  # integers up to 2**bits fit in the mantissa
        return _MANTISSA.get(dst, 0) >= src.bits
    if src.kind == "uint":
        return dst.bits > src.bits or (dst.kind == "uint" and dst.bits >= src.bits)
    return dst.kind == "int" and dst.bits >= src.bits


def _keep(x: Value, root: Node) -> Value | None:
    """``x`` itself when it has the type of the node it replaces."""
    return x if x.type == root.outputs[0].type else None


def _perm(node: Node) -> tuple[int, ...]:
    rank = node.inputs[0].ndim if node.inputs[0] is not None else 0
    p = node.attrs["perm"]
    return tuple(range(rank))[::-1] if p is None else tuple(normalize_axis(a, rank) for a in p)


def _transposes(x: Value, inner: Node, outer: Node) -> Value:
    p, q = _perm(inner), _perm(outer)
    combined = tuple(p[i] for i in q)  # out[k] = x axis p[q[k]]
    if combined == tuple(range(len(combined))):
        return x
    return ops.transpose(x, perm=combined)


def _reshapes(x: Value, outer: Node) -> Value | None:
    out = outer.outputs[0]
    if x.type == out.type:
        return x
    target = outer.attrs["shape"]
    try:
        direct = reshape_shape(x.shape, target) if 0 not in target else None
    except ShapeError:
        direct = None
    if direct == tuple(out.shape):
        return ops.reshape(x, shape=target)
    if out.type.is_static:
        return ops.reshape(x, shape=tuple(int(d) for d in out.shape))
    return None


def _casts(x: Value, inner: Node, outer: Node) -> Value | None:
    src, mid, dst = x.dtype, inner.attrs["to"], outer.attrs["to"]
    if not lossless_cast(src, mid):
        return None
    # an out-of-range float -> int cast is not an integer wrap-around: keep int->float->int
    if src.is_integer and mid.is_float and dst.is_integer and not lossless_cast(src, dst):
        return None
    return x if dst == src else ops.cast(x, to=dst)


def _cast_same(x: Value, root: Node) -> Value | None:
    return x if root.attrs["to"] == x.dtype else None


def _identity(x: Value, root: Node) -> Value | None:
    return None if is_graph_output(root.outputs[0]) else x


x = P.var("x")

SIMPLIFY_RULES = RuleSet("simplify", [
    # x * 1 -> x   (1 * x too: mul is commutative)
    Rule("mul_one", pat.mul(x, 1, bind="root"), _keep),
    # x + 0 -> x
    Rule("add_zero", pat.add(x, 0, bind="root"), _keep),
    # x - 0 -> x
    Rule("sub_zero", pat.sub(x, 0, bind="root"), _keep),
    # x / 1 -> x
    Rule("div_one", pat.div(x, 1, bind="root"), _keep),
    # -(-x) -> x
    Rule("neg_neg", pat.neg(pat.neg(x)), lambda x: x, shared=True),
    # transpose(transpose(x, p), q) -> transpose(x, p[q])   (or x when that is the identity)
    Rule("transpose_transpose",
         pat.transpose(pat.transpose(x, bind="inner"), bind="outer"), _transposes, shared=True),
    # reshape(reshape(x, s), t) -> reshape(x, t)   (or x when the shapes agree)
    Rule("reshape_reshape", pat.reshape(pat.reshape(x), bind="outer"), _reshapes, shared=True),
    # cast(cast(x, a), b) -> cast(x, b) when x -> a is lossless   (or x when b is x's dtype)
    Rule("cast_cast", pat.cast(pat.cast(x, bind="inner"), bind="outer"), _casts, shared=True),
    # cast(x, to=dtype of x) -> x
    Rule("cast_same", pat.cast(x, bind="root"), _cast_same),
    # identity(x) -> x   (kept where it names a graph output)
    Rule("identity", pat.identity(x, bind="root"), _identity),
])


def absorb_output_identities(graph: Graph) -> tuple[Graph, int]:
    """Remove ``%out = identity(%x)`` graph outputs whose ``%x`` a node computes and no output
    names: the producer writes ``%out`` and every reader of ``%x`` reads ``%out``. Returns the
    graph (the same object when nothing changed) and the number of identities removed."""
    outputs = set(graph.outputs)
    rename: dict[Value, Value] = {}
    dropped: set[Node] = set()
    for n in graph.nodes:
        if n.op is not ops.identity or n.outputs[0] not in outputs:
            continue
        x = n.inputs[0]
        if x is None or x in outputs or x in rename or graph.producer(x) is None:
            continue
        rename[x] = n.outputs[0]
        dropped.add(n)
    if not rename:
        return graph, 0
    nodes = []
    for n in graph.nodes:
        if n in dropped:
            continue
        ins = tuple(rename.get(v, v) if v is not None else None for v in n.inputs)
        outs = tuple(rename.get(v, v) for v in n.outputs)
        if ins != n.inputs or outs != n.outputs:
            n = replace(n, inputs=ins, outputs=outs)
        nodes.append(n)
    return graph.replace(nodes=nodes), len(dropped)


def simplify(graph: Graph) -> PassResult:
    """Apply :data:`SIMPLIFY_RULES` to a fixpoint, then :func:`absorb_output_identities`.
    Pure and idempotent."""
    r = rewrite_to_fixpoint(graph, SIMPLIFY_RULES)
    g, absorbed = absorb_output_identities(r.graph)
    if not absorbed:
        return r
    return PassResult(g, True, {**r.stats, "output_identity": absorbed})
