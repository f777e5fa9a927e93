"""Cost estimates shared by passes: FLOPs per node and peak memory from liveness.

Symbolic dims are resolved with ``bindings`` (``{"N": 64}``); expressions that shape rules
produce (``"(H-3)//2+1"``, ``"N*4"``) are evaluated too. An unbound name raises
:class:`~lbdl_graph.errors.ShapeError` naming it, so that an estimate is never silently wrong.

FLOPs (:func:`flops`): matmul-like ops count 2 per multiply-accumulate, convolutions
``2 * out elements * (C_in / group) * kernel area``; elementwise ops 1 per output element
(``fused_elementwise``: 1 per element and step); reductions 1 per input element; softmax 5,
layer_norm and batch_norm_train 8, batch_norm 4 per element; pooling ``out elements * window``;
dropout and the random ops 1 per element (the counter-based hash is integer work, not counted as
FLOPs).
Data movement (the ``SHAPE`` ops, identity, stop_gradient, constants) costs 0; any other op
1 per output element.

Memory (:func:`live_bytes`, :func:`peak_memory`) follows the NumPy interpreter with in-place
execution off (``Interpreter(..., inplace=False)``; ``passes.plan_memory.planned_peak`` models
in-place writes and views): nodes run in graph order, a node's outputs are allocated while its
inputs are still held, and a value is released right after its last reader
(:func:`lbdl_graph.analysis.last_uses`); graph outputs are never released. Graph inputs and
parameters are not counted. Each value counts its own type's bytes, as
:class:`~lbdl_graph.backends.numpy.NodeProfile` ``out_bytes`` does (a view or an identity output
counts again, although NumPy may share the buffer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from lbdl_graph.analysis import last_uses
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import Trait
from lbdl_graph.shapes import Dim, eval_dim

__all__ = [
    "Bindings",
    "dim_value",
    "flops",
    "graph_flops",
    "live_bytes",
    "numel_of",
    "peak_memory",
    "value_bytes",
]

Bindings = Mapping[str, int]



def dim_value(d: Dim, bindings: Bindings | None = None) -> int:
    """The integer value of a dim: ints as they are, names and expressions from ``bindings``
    (an unbound name raises ShapeError)."""
    return eval_dim(d, bindings)


def numel_of(v: Value | None, bindings: Bindings | None = None) -> int:
    """Element count of a value (0 for an absent optional input)."""
    if v is None:
        return 0
    return math.prod(dim_value(d, bindings) for d in v.shape)


def value_bytes(v: Value, bindings: Bindings | None = None) -> int:
    """Bytes of a value's tensor (sub-byte types round up to whole bytes)."""
    return (numel_of(v, bindings) * v.dtype.bits + 7) // 8


# ------------------------------------------------------------------------------------------ FLOPs


def _shape(v: Value | None, bindings: Bindings | None) -> tuple[int, ...]:
    return () if v is None else tuple(dim_value(d, bindings) for d in v.shape)


def _matmul_flops(node: Node, b: Bindings | None) -> int:
    a = _shape(node.inputs[0], b)
    k = a[-1] if a else 1
    return 2 * numel_of(node.outputs[0], b) * k


def _conv_flops(node: Node, b: Bindings | None) -> int:
    w = _shape(node.inputs[1], b)
    out = numel_of(node.outputs[0], b)
    extra = sum(out for v in node.inputs[2:] if v is not None)  # bias, residual
    return 2 * out * math.prod(w[1:]) + extra


def _conv_transpose_flops(node: Node, b: Bindings | None) -> int:
    w = _shape(node.inputs[1], b)
    return 2 * numel_of(node.inputs[0], b) * math.prod(w[1:])


def _linear_flops(node: Node, b: Bindings | None) -> int:
    out = numel_of(node.outputs[0], b)
    act = 0 if node.attrs.get("activation", "none") == "none" else out
    bias = out if len(node.inputs) > 2 and node.inputs[2] is not None else 0
    return _matmul_flops(node, b) + bias + act


def _attention_flops(node: Node, b: Bindings | None) -> int:
    q, k = _shape(node.inputs[0], b), _shape(node.inputs[1], b)
    out = _shape(node.outputs[0], b)
    lq, d, lk, dv = q[-2], q[-1], k[-2], out[-1]
    batch = math.prod(out[:-2])
    scores = batch * lq * lk
    return 2 * scores * d + 2 * scores * dv + 5 * scores


def _pool_flops(node: Node, b: Bindings | None) -> int:
    return numel_of(node.outputs[0], b) * math.prod(node.attrs.get("kernel_shape", (1,)))


def _per_element(k: int, of: str = "out") -> Callable[[Node, Bindings | None], int]:
    def rule(node: Node, b: Bindings | None) -> int:
        v = node.outputs[0] if of == "out" else node.inputs[0]
        return k * numel_of(v, b)

    return rule


_RULES: dict[str, Callable[[Node, Bindings | None], int]] = {
    "matmul": _matmul_flops,
    "matmul_nbits": _matmul_flops,
    "dynamic_quant_matmul": _matmul_flops,
    "linear": _linear_flops,
    "conv": _conv_flops,
    "fused_conv": _conv_flops,
    "conv_transpose": _conv_transpose_flops,
    "attention": _attention_flops,
    "max_pool": _pool_flops,
    "avg_pool": _pool_flops,
    "softmax": _per_element(5),
    "log_softmax": _per_element(5),
    "layer_norm": _per_element(8),
    "batch_norm": _per_element(4),
    "batch_norm_train": _per_element(8),
    "cumsum": _per_element(1, "in"),
}
_FREE = frozenset({"identity", "stop_gradient", "constant", "full_like", "iota_like"})


def flops(node: Node, bindings: Bindings | None = None) -> int:
    """Estimated floating-point operations of one node (see the module docstring)."""
    name = node.op.name
    rule = _RULES.get(name)
    if rule is not None:
        return int(rule(node, bindings))
    if name in _FREE or node.op.has(Trait.SHAPE):
        return 0
    if node.op.has(Trait.REDUCTION):
        return numel_of(node.inputs[0], bindings)
    out = sum(numel_of(v, bindings) for v in node.outputs)
    if name == "fused_elementwise":
        return out * len(node.attrs["program"])
    return out


def graph_flops(graph: Graph, bindings: Bindings | None = None,
                nodes: Iterable[Node] | None = None) -> int:
    """Total :func:`flops` of ``nodes`` (default: every node of ``graph``)."""
    return sum(flops(n, bindings) for n in (graph.nodes if nodes is None else nodes))


# ----------------------------------------------------------------------------------------- memory


def live_bytes(graph: Graph, bindings: Bindings | None = None, *,
               include: Callable[[Value], bool] | None = None) -> list[int]:
    """For each node, the bytes of node outputs held while it runs (its inputs and outputs
    included), in graph order; ``include`` restricts the count to some values."""
    sizes: dict[Value, int] = {}
    out: list[int] = []
    live = 0
    for node, dead in zip(graph.nodes, last_uses(graph), strict=True):
        for v in node.outputs:
            if include is None or include(v):
                sizes[v] = value_bytes(v, bindings)
                live += sizes[v]
        out.append(live)
        for v in dead:
            live -= sizes.pop(v, 0)  # inputs, parameters and excluded values have no entry
    return out


def peak_memory(graph: Graph, bindings: Bindings | None = None, *,
                include: Callable[[Value], bool] | None = None) -> int:
    """Bytes of live intermediate values at the worst point of a run in graph order (inputs
    and parameters excluded); ``include`` restricts the count (e.g. to activations)."""
    return max(live_bytes(graph, bindings, include=include), default=0)
