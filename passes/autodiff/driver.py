"""The reverse-mode driver: graph in, graph with gradient outputs out.

Micrograd's ``backward`` on a dataflow graph: seed the loss with 1, walk the nodes in reverse
topological order, ask each node's VJP rule for its inputs' cotangents, sum them back to the
input shapes (``sum_to``: rules never unbroadcast), and add them up where a value fans out.
Only *active* values get cotangents: float values that depend on a ``wrt`` value through
differentiable ops. Integer and bool values, ``stop_gradient`` and every op without
``Trait.DIFFERENTIABLE`` (floor, sign, argmax, ...) carry no gradient. Gradient nodes are named
``grad/<forward node>/...``, carry the forward node's source line, the scope ``grad/<forward
scope>`` (``grad`` for a top-level node) and the origin ``autodiff:<forward op>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder, current_builder
from lbdl_graph.errors import AutodiffError, LbdlError
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.shapes import Dim, fmt_shape
from lbdl_graph.source import source_override

from ..base import PassResult
from .table import VJPS

__all__ = ["active_values", "backprop", "differentiate", "grad_scope", "sum_to"]


def grad_scope(scope: str) -> str:
    """The scope of the gradient nodes of a forward node in ``scope``: ``grad/<scope>``."""
    return f"grad/{scope}" if scope else "grad"


def sum_to(g: Value, shape: Sequence[Dim]) -> Value:
    """Sum ``g`` over the axes that broadcasting added or stretched, so that it has ``shape``.

    Works on symbolic dims: a cotangent of shape (N, 10) for a (10,) bias sums axis 0.
    """
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise AutodiffError(f"cannot sum cotangent {g.type} to the larger shape {fmt_shape(shape)}")
    stretched = [lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1]
    axes = (*range(lead), *stretched)
    if not axes:
        raise AutodiffError(f"cotangent {g.type} does not broadcast to {fmt_shape(shape)}")
    out: Value = ops.reduce_sum(g, axes=axes, keepdims=bool(stretched))
    if stretched and lead:
        out = ops.squeeze(out, axes=tuple(range(lead)))
    if tuple(out.shape) != shape:
        raise AutodiffError(f"cotangent {g.type} does not broadcast to {fmt_shape(shape)}")
    return out


def active_values(nodes: Iterable[Node], sources: Iterable[Value]) -> set[Value]:
    """Float values that depend on ``sources`` through differentiable ops (sources included)."""
    active = set(sources)
    for n in nodes:
        if n.op.differentiable and any(v in active for v in n.inputs if v is not None):
            active.update(o for o in n.outputs if o.dtype.is_float)
    return active


def backprop(nodes: Sequence[Node], seeds: Mapping[Value, Value], active: set[Value],
             stats: Counter[str] | None = None, *, within: Node | None = None
             ) -> dict[Value, Value]:
    """Walk ``nodes`` (topologically ordered) backwards from the seed cotangents and return the
    cotangent of every active value they reach. Emits into the current builder; the gradient
    nodes' scope and origin come from each node (or from ``within``, the node whose
    decomposition ``nodes`` are)."""
    stats = Counter() if stats is None else stats
    b = current_builder()
    ct: dict[Value, Value] = dict(seeds)
    for node in reversed(nodes):
        gs = tuple(ct.get(o) for o in node.outputs)
        if all(g is None for g in gs) or not any(v in active for v in node.inputs if v is not None):
            continue
        tag = within or node
        grads = _node_vjp(b, node, gs, active, stats, tag)
        with b.scope(f"grad/{node.name}"), _provenance(b, tag), source_override(node.source):
            for v, gv in zip(node.inputs, grads, strict=True):
                if v is None or gv is None or v not in active:
                    continue
                gv = _fit(gv, v, node)
                ct[v] = ops.add(ct[v], gv, name="accum") if v in ct else gv
    return ct


def _provenance(b: GraphBuilder, tag: Node) -> AbstractContextManager[None]:
    return b.provenance(grad_scope(tag.scope), f"autodiff:{tag.op.name}")


def _node_vjp(b: GraphBuilder, node: Node, gs: tuple[Value | None, ...], active: set[Value],
              stats: Counter[str], tag: Node) -> tuple[Value | None, ...]:
    op = node.op
    rule = VJPS.get(op)
    if rule is None:
        if op.decompose is None:
            raise AutodiffError(f"op '{op.name}' has no VJP rule and no decomposition",
                                node=node.name, op=op.name, source=node.source,
                                hint="register one with @VJPS.register(ops.<op>) in "
                                     "passes/autodiff/rules_*.py")
        stats["decomposed"] += 1
        return _decomposed_vjp(b, node, gs, active, stats, tag)
    multi = not (isinstance(op.outputs, int) and op.outputs == 1)
    try:
        with b.scope(f"grad/{node.name}"), _provenance(b, tag), source_override(node.source):
            grads = rule(gs if multi else gs[0], node.outputs if multi else node.outputs[0],
                         *node.inputs, **node.attrs)
    except LbdlError as e:
        raise AutodiffError(f"VJP of {op.name} failed: {e.message}", node=node.name, op=op.name,
                            source=node.source, hint=e.hint) from e
    if len(grads) != len(node.inputs):
        raise AutodiffError(f"VJP rule of {op.name} returned {len(grads)} cotangents for "
                            f"{len(node.inputs)} inputs", node=node.name, op=op.name,
                            source=node.source)
    stats["vjp_rules"] += 1
    return tuple(grads)


def _decomposed_vjp(b: GraphBuilder, node: Node, gs: tuple[Value | None, ...],
                    active: set[Value], stats: Counter[str], tag: Node
                    ) -> tuple[Value | None, ...]:
    """Differentiate an op through its decomposition, re-emitted next to the gradient."""
    start = len(b.nodes)
    with b.scope(f"grad/{node.name}"), _provenance(b, tag), source_override(node.source):
        res = node.op.decompose(*node.inputs, **node.attrs)  # type: ignore[misc]
    outs = tuple(res) if isinstance(res, tuple | list) else (res,)
    inner = b.nodes[start:]
    seeds = {o: g for o, g in zip(outs, gs, strict=True) if g is not None}
    sources = [v for v in node.inputs if v is not None and v in active]
    ct = backprop(inner, seeds, active_values(inner, sources), stats, within=tag)
    return tuple(ct.get(v) if v is not None else None for v in node.inputs)


def _fit(gv: Value, v: Value, node: Node) -> Value:
    """Check a rule's cotangent against the input it belongs to and unbroadcast it."""
    if gv.dtype != v.dtype:
        raise AutodiffError(f"VJP rule of {node.op.name} gave a {gv.type} cotangent for input "
                            f"%{v.name}: {v.type}", node=node.name, op=node.op.name,
                            source=node.source)
    try:
        return sum_to(gv, v.shape)
    except AutodiffError as e:
        raise e.with_context(node=node.name, op=node.op.name, source=node.source) from None


# ---------------------------------------------------------------- the pass


def _resolve_loss(graph: Graph, loss: str) -> Value:
    v = next((o for o in graph.outputs if o.name == loss), None) or graph.values.get(loss)
    if v is None:
        raise AutodiffError(f"unknown loss '{loss}' in graph '{graph.name}'; outputs: "
                            f"{graph.output_names()}")
    prod = graph.producer(v)
    problem = None
    if not v.dtype.is_float:
        problem = f"loss '{loss}' must be a float scalar, got {v.type}"
    elif any(d != 1 for d in v.shape):
        problem = f"loss '{loss}' must be a scalar, got shape {fmt_shape(v.shape)} ({v.type})"
    if problem:
        raise AutodiffError(problem, node=prod.name if prod else None,
                            op=prod.op.name if prod else None,
                            source=prod.source if prod else None,
                            hint="reduce it, e.g. reduce_mean(..., axes=None, keepdims=False)")
    return v


def _resolve_wrt(graph: Graph, wrt: str | Sequence[str] | None) -> list[tuple[str, Value]]:
    if wrt is None:
        names = [p.name for p in graph.params if p.trainable and p.value.dtype.is_float]
        if not names:
            raise AutodiffError(f"graph '{graph.name}' has no trainable float parameters; pass "
                                "wrt=[input or parameter names]")
    else:
        names = [wrt] if isinstance(wrt, str) else list(wrt)
    if len(set(names)) != len(names):
        raise AutodiffError(f"wrt names repeat: {names}")
    out: list[tuple[str, Value]] = []
    for name in names:
        v = graph.values.get(name)
        if v is None:
            raise AutodiffError(
                f"unknown wrt '{name}': not an input, parameter or value of graph '{graph.name}'",
                hint=f"inputs: {[i.name for i in graph.inputs]}, "
                     f"parameters: {[p.name for p in graph.params]}")
        p = graph.param_of(v)
        if p is not None and not p.trainable:
            raise AutodiffError(f"parameter '{name}' is frozen (trainable=False) and gets no "
                                "gradient")
        if not v.dtype.is_float:
            raise AutodiffError(f"cannot differentiate with respect to '{name}' of type "
                                f"{v.type}: only float values have gradients")
        out.append((name, v))
    return out


def _live(nodes: Sequence[Node], outputs: Iterable[Value]) -> list[Node]:
    """The nodes among ``nodes`` that ``outputs`` depend on, in order."""
    needed = set(outputs)
    keep: list[Node] = []
    for n in reversed(nodes):
        if any(o in needed for o in n.outputs):
            keep.append(n)
            needed.update(v for v in n.inputs if v is not None)
    return keep[::-1]


def differentiate(graph: Graph, loss: str = "loss", wrt: str | Sequence[str] | None = None, *,
                  allow_unused: bool = False) -> PassResult:
    """The gradient pass: ``graph`` plus one output ``grad:<name>`` per ``wrt`` value.

    ``wrt`` defaults to every trainable parameter. Stats count the nodes differentiated by a
    rule (``vjp_rules``) or through their decomposition (``decomposed``) and the gradient nodes
    added (``grad_nodes``). See :func:`lbdl_graph.passes.autodiff.grad`.
    """
    loss_v = _resolve_loss(graph, loss)
    targets = _resolve_wrt(graph, wrt)
    b = GraphBuilder.from_graph(graph)
    n_fwd = len(b.nodes)
    stats: Counter[str] = Counter()
    prod = graph.producer(loss_v)
    with b:
        with b.scope(f"grad/{prod.name if prod else loss_v.name}"), \
                b.provenance(grad_scope(prod.scope if prod else ""), "autodiff:seed"), \
                source_override(prod.source if prod else None):
            seed = ops.full_like(loss_v, value=1.0, name="seed")
        active = active_values(graph.nodes, [v for _, v in targets])
        ct = backprop(graph.nodes, {loss_v: seed}, active, stats)
        outs: list[Value] = []
        producer = {o: n for n in b.nodes[n_fwd:] for o in n.outputs}
        for name, v in targets:
            g = ct.get(v)
            if g is None:
                if not allow_unused:
                    raise AutodiffError(
                        f"loss '{loss}' does not depend on '{name}' (through differentiable ops)",
                        hint="pass allow_unused=True to get zeros")
                with b.scope(f"grad/{name}"), b.provenance("grad", "autodiff:unused"):
                    g = ops.full_like(v, value=0.0, name="unused")
                producer[g] = b.nodes[-1]
            made = producer.get(g)  # None: a forward value (or the seed's input) is the gradient
            (o,) = b.add_node(ops.identity, [g], {}, name=f"grad:{name}",
                              scope=made.scope if made else "grad", origin="autodiff:output")
            outs.append(o)
    kept = _live(b.nodes[n_fwd:], outs)
    b.nodes[n_fwd:] = kept
    b.metadata["grads"] = {name: o.name for (name, _), o in zip(targets, outs, strict=True)}
    stats["grad_nodes"] = len(kept)
    return PassResult(b.build([*graph.outputs, *outs]), True, dict(stats))
