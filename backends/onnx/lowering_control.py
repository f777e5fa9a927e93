"""ONNX lowering of the control-flow ops: If, Loop and Scan with GraphProto bodies.

An IR body is closed (captures are its trailing inputs); ONNX bodies read outer values by name.
:func:`lower_body` lowers a body graph into a GraphProto whose formal inputs are the body's
leading inputs and whose captures are replaced by the outer names the node receives, sharing
the export's name sets so that no name in a body shadows one outside (ONNX requires that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnx import GraphProto, helper

from lbdl_graph import ops
from lbdl_graph.errors import OnnxError
from lbdl_graph.graph import Graph, Value

from .lowering import LOWERINGS, LoweringContext, OnnxBuilder, onnx_dtype

__all__ = ["lower_body"]


def _info(name: str, v: Value) -> Any:
    return helper.make_tensor_value_info(name, onnx_dtype(v.type.dtype), list(v.type.shape))


def lower_body(b: OnnxBuilder, body: Graph, key: str, formal: int,
               captured: Sequence[str | None]) -> GraphProto:
    """Lower ``body`` as the ``key`` attribute of the node being lowered: its first ``formal``
    inputs become the GraphProto's inputs, the others read the outer names ``captured``."""
    parent = b.ctx
    if len(body.inputs) - formal != len(captured):
        raise OnnxError(f"{key}: {len(body.inputs) - formal} captures expected, "
                        f"{len(captured)} given")
    ctx = LoweringContext(parent.opset, parent.target, training=parent.training)
    ctx._values = parent._values  # one namespace for the model: bodies shadow nothing
    ctx._node_names = parent._node_names
    ctx._ir_nodes = parent._ir_nodes
    ctx.domains = parent.domains
    ctx.node_map = parent.node_map
    prefix = f"{b.prefix}/{key}"
    env: dict[Value, str] = {}
    inputs = []
    for v in body.inputs[:formal]:
        env[v] = ctx.fresh_value(f"{prefix}/{v.name}")
        inputs.append(_info(env[v], v))
    for v, outer in zip(body.inputs[formal:], captured, strict=True):
        if outer is None:
            raise OnnxError(f"{key}: capture %{v.name} has no outer value")
        env[v] = outer
    for node in body.nodes:
        names = [ctx.fresh_value(f"{prefix}/{v.name}") for v in node.outputs]
        ctx.lower(node, [env[v] if v is not None else None for v in node.inputs],
                  outputs=names, prefix=f"{prefix}/{node.name}")
        env.update(zip(node.outputs, names, strict=True))
    made = {o for n in ctx.nodes for o in n.output}
    outputs, seen = [], set()
    for v in body.outputs:
        name = env[v]
        if name not in made or name in seen:  # an input, a capture or a repeated output
            copy = ctx.fresh_value(f"{prefix}/out")
            ctx.add_node(helper.make_node("Identity", [name], [copy],
                                          name=ctx.fresh_node(f"{prefix}/Identity")), b.origin)
            name = copy
        seen.add(name)
        outputs.append(_info(name, v))
    return helper.make_graph(ctx.nodes, f"{b.prefix}/{key}", inputs, outputs,
                             initializer=ctx.initializers)


@LOWERINGS.register(ops.if_)
def _if_onnx(b: OnnxBuilder, cond: str, *captures: str, then_branch: Graph,
             else_branch: Graph) -> tuple[str, ...]:
    then_g = lower_body(b, then_branch, "then_branch", 0, captures)
    else_g = lower_body(b, else_branch, "else_branch", 0, captures)
    return b.op_n("If", len(then_branch.outputs), cond, then_branch=then_g, else_branch=else_g)


@LOWERINGS.register(ops.loop)
def _loop_onnx(b: OnnxBuilder, trip_count: str | None, cond: str | None, *operands: str,
               body: Graph, num_carried: int, trip_dim: Any) -> tuple[str, ...]:
    carried, captures = operands[:num_carried], operands[num_carried:]
    g = lower_body(b, body, "body", 2 + num_carried, captures)
    return b.op_n("Loop", len(body.outputs) - 1, trip_count, cond, *carried, body=g)


@LOWERINGS.register(ops.scan)
def _scan_onnx(b: OnnxBuilder, *operands: str, body: Graph, num_scan_inputs: int,
               num_captures: int, **layout: Any) -> tuple[str, ...]:
    n_formal = len(operands) - num_captures
    g = lower_body(b, body, "body", n_formal, operands[n_formal:])
    attrs: dict[str, Any] = {k: list(v) for k, v in layout.items() if v is not None}
    attrs.update(body=g, num_scan_inputs=num_scan_inputs)
    return b.op_n("Scan", len(body.outputs), *operands[:n_formal], **attrs)
