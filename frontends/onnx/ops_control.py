"""ONNX If, Loop and Scan: subgraph attributes become closed IR bodies.

An ONNX body reads outer tensors by name; :func:`import_body` imports it with a nested
importer whose unknown names resolve in the enclosing one and become explicit captures (extra
body inputs, passed as extra operands of the IR node). Body initializers become constants.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import GraphProto, NodeProto, helper

from lbdl_graph import ops
from lbdl_graph.dtypes import bool_, int64
from lbdl_graph.graph import Graph, Value
from lbdl_graph.types import TensorType

from .context import NodeCtx, handles
from .loader import tensor_to_numpy

if TYPE_CHECKING:
    from .importer import Importer

__all__ = ["import_body", "inline_constant_if"]


def _unique_outputs(g: GraphProto) -> GraphProto:
    """A copy where each output name is listed once (repeats go through an Identity)."""
    out = GraphProto()
    out.CopyFrom(g)
    seen: set[str] = set()
    for k, vi in enumerate(out.output):
        if vi.name in seen:
            new = f"{vi.name}__out{k}"
            out.node.append(helper.make_node("Identity", [vi.name], [new]))
            vi.name = new
        seen.add(vi.name)
    return out


@functools.cache
def _body_importer() -> type:
    from .importer import Importer

    class BodyImporter(Importer):
        """Imports one subgraph; names it does not define are captured from ``parent``."""

        def __init__(self, parent: Importer, g: GraphProto, formal: list[TensorType],
                     name: str) -> None:
            model = helper.make_model(g, opset_imports=list(parent.model.opset_import))
            model.ir_version = parent.model.ir_version or model.ir_version
            super().__init__(model, parent.src, name=name, constant_inputs=None)
            self.parent = parent
            self.formal = formal
            self.captures: list[Value] = []

        def add_inputs(self) -> None:
            g = self.model.graph
            for t in g.initializer:
                self.known[t.name] = tensor_to_numpy(t, self.src, f"initializer '{t.name}'")
            for vi, t in zip(g.input, self.formal, strict=True):
                self.used.add(vi.name)
                self.values[vi.name] = self.b.input(vi.name, t.dtype, t.shape)
                self.graph_inputs.add(vi.name)

        def _local(self, name: str) -> bool:
            return (name in self.values or name in self.inits or name in self.known
                    or name in self.symbolic or name in self.producer)

        def value(self, name: str) -> Value:
            if self._local(name):
                return super().value(name)
            outer = self.parent.value(name)
            v = self.b.input(name, outer.dtype, outer.shape)
            self.used.add(name)
            self.values[name] = v
            self.captures.append(outer)
            return v

        def constant_value(self, name: str) -> np.ndarray | None:
            if self._local(name):
                return super().constant_value(name)
            return self.parent.constant_value(name)

    return BodyImporter


def import_body(n: NodeCtx, key: str, formal: list[TensorType]) -> tuple[Graph, list[Value]]:
    """Import the subgraph attribute ``key`` of node ``n`` with the given formal input types;
    returns the closed body (formal inputs, then captures) and the captured outer values."""
    g = n.attr(key)
    if not isinstance(g, GraphProto):
        raise n.error(f"attribute '{key}' must be a graph")
    if len(g.input) != len(formal):
        raise n.error(f"body '{key}' takes {len(g.input)} inputs, the node passes {len(formal)}")
    sub = _body_importer()(n.imp, _unique_outputs(g), formal, f"{n.name}/{key}")
    body = sub.run()
    return body, list(sub.captures)


def inline_constant_if(imp: Importer, proto: NodeProto) -> list[NodeProto] | None:
    """The taken branch of an If whose condition is known at import time, as nodes of the
    enclosing graph (initializers as Constants, outputs renamed by Identity); else None.

    Exports branch on shapes that are fixed once the model is imported (AffineGrid's 2-D/3-D
    switch, for example); inlining keeps the branch's constants foldable and lets the two
    branches differ in type."""
    if proto.op_type != "If" or proto.domain not in ("", "ai.onnx") or not proto.input:
        return None
    cond = imp.constant_value(proto.input[0]) if proto.input[0] else None
    if cond is None or cond.size != 1:
        return None
    key = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
    g = next((a.g for a in proto.attribute if a.name == key and a.HasField("g")), None)
    if g is None or len(g.output) != len(proto.output):
        return None  # malformed: the handler reports it
    nodes = [helper.make_node("Constant", [], [t.name], name=f"{proto.name}/{key}/{t.name}",
                              value=t) for t in g.initializer]
    nodes += list(g.node)
    nodes += [helper.make_node("Identity", [vi.name], [o], name=f"{proto.name}/{key}/out{k}")
              for k, (vi, o) in enumerate(zip(g.output, proto.output, strict=True)) if o]
    return nodes


def _with_captures(body: Graph, caps: list[Value], mine: list[Value], formal: int) -> Graph:
    """``body`` taking all of ``caps`` (in order) after its formal inputs."""
    by_outer = dict(zip((id(v) for v in mine), body.inputs[formal:], strict=True))
    names = set(body.values)
    inputs = list(body.inputs[:formal])
    for c in caps:
        v = by_outer.get(id(c))
        if v is None:
            name, k = c.name, 0
            while name in names:
                k += 1
                name = f"{c.name}_{k}"
            names.add(name)
            v = Value(name, c.type)
        inputs.append(v)
    return body.replace(inputs=inputs)


def _merge(caps: list[list[Value]]) -> list[Value]:
    out: list[Value] = []
    for cs in caps:
        out.extend(c for c in cs if all(c is not o for o in out))
    return out


@handles("If")
def _if(n: NodeCtx) -> Any:
    cond = n.x(0)
    then_b, then_c = import_body(n, "then_branch", [])
    else_b, else_c = import_body(n, "else_branch", [])
    caps = _merge([then_c, else_c])
    then_b, else_b = _with_captures(then_b, caps, then_c, 0), _with_captures(else_b, caps,
                                                                              else_c, 0)
    a, b = [v.type for v in then_b.outputs], [v.type for v in else_b.outputs]
    if a != b:
        raise n.unsupported(f"the branches give different types ({', '.join(map(str, a))} vs "
                            f"{', '.join(map(str, b))})")
    return n.emit(ops.if_, cond, *caps, out=list(range(len(a))), then_branch=then_b,
                  else_branch=else_b)


@handles("Loop")
def _loop(n: NodeCtx) -> Any:
    trip, cond = n.opt(0), n.opt(1)
    carried = [n.x(i) for i in range(2, n.n_inputs)]
    formal = [TensorType(int64, ()), TensorType(bool_, ()), *(v.type for v in carried)]
    body, caps = import_body(n, "body", formal)
    known = n.const(0, "trip count") if trip is not None and \
        n.imp.constant_value(n.proto.input[0]) is not None else None
    n_scan = len(body.outputs) - 1 - len(carried)
    trip_dim: Any = None
    if n_scan:
        trip_dim = int(np.asarray(known).reshape(-1)[0]) if known is not None else \
            n.imp.fresh(f"{n.name}_trips").replace("/", "_")
    return n.emit(ops.loop, trip, cond, *carried, *caps, out=list(range(len(body.outputs) - 1)),
                  body=body, num_carried=len(carried), trip_dim=trip_dim)


@handles("Scan")
def _scan(n: NodeCtx) -> Any:
    operands = [n.x(i) for i in range(n.n_inputs)]
    m = int(n.attr("num_scan_inputs"))
    n_states = len(operands) - m
    axes = list(n.attr("scan_input_axes", [0] * m))
    slices = []
    for x, a in zip(operands[n_states:], axes, strict=True):
        a = a + x.ndim if a < 0 else a
        slices.append(x.type.with_shape([d for k, d in enumerate(x.shape) if k != a]))
    body, caps = import_body(n, "body", [*(v.type for v in operands[:n_states]), *slices])
    layout = {k: list(n.attr(k)) for k in ("scan_input_axes", "scan_input_directions",
                                           "scan_output_axes", "scan_output_directions")
              if n.attr(k) is not None}
    return n.emit(ops.scan, *operands, *caps, out=list(range(len(body.outputs))), body=body,
                  num_scan_inputs=m, num_captures=len(caps), **layout)
