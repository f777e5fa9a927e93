"""ONNX lowering: the :data:`LOWERINGS` table and the :class:`OnnxBuilder` its rules emit with.

A rule receives the builder, the ONNX names of the IR node's inputs (None for an absent optional
input) and the node's attributes as keywords, and returns the ONNX name(s) of its result(s):

    @LOWERINGS.register(ops.reduce_sum)
    def _reduce_sum_onnx(b: OnnxBuilder, x: str, *, axes, keepdims) -> str: ...

The export context then renames the results to the IR value names and names the node that
produces the first result after the IR node, so ONNX Runtime errors can be mapped back. Ops with
a ``decompose`` and no rule (the random ops) are lowered by inlining their decomposition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import NodeProto, StringStringEntryProto, TensorProto, helper, numpy_helper

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import DType, dtype, float32, float64, int32, int64
from lbdl_graph.errors import LbdlError, OnnxError
from lbdl_graph.graph import Node, Value
from lbdl_graph.registry import OpTable
from lbdl_graph.types import TensorType

__all__ = ["LOWERINGS", "ORT_CPU_TYPES", "Lowering", "LoweringContext", "OnnxBuilder",
           "onnx_dtype", "schema_types", "simple"]

Lowering = Callable[..., "str | Sequence[str]"]
LOWERINGS: OpTable[Lowering] = OpTable("onnx")

_F16_32_64 = frozenset({"float16", "float32", "float64"})
_FLOATS_LOW = frozenset({"float16", "float32"})
_NUM = frozenset({"float16", "float32", "float64", "int8", "uint8", "int32", "int64"})
_INTS = frozenset({"int8", "uint8", "int32", "int64"})
_BIG = frozenset({"float16", "float32", "float64", "int32", "int64"})

# Element types ONNX Runtime's CPU provider has kernels for (probed on ORT 1.31), keyed by ONNX op;
# ops not listed run every type our IR has for them. Target "ort" casts around the gaps.
ORT_CPU_TYPES: dict[str, frozenset[str]] = {
    **dict.fromkeys(("Exp", "Log", "Sqrt", "Reciprocal", "Sin", "Cos", "Tanh", "Sigmoid",
                     "Floor", "Ceil", "Round", "Softmax", "LogSoftmax", "MaxPool",
                     "BatchNormalization", "LayerNormalization"), _F16_32_64),
    **dict.fromkeys(("Erf", "Softplus", "LeakyRelu", "Gelu", "Conv", "ConvTranspose",
                     "AveragePool"), _FLOATS_LOW),
    "Relu": frozenset({"float16", "float32", "float64", "int8", "int32"}),
    "Neg": frozenset({"float16", "float32", "float64", "int8", "int32", "int64"}),
    **dict.fromkeys(("Abs", "Add", "Sub", "Mul", "Div", "Max", "Min", "Less", "LessOrEqual",
                     "Greater", "GreaterOrEqual", "ArgMax", "ArgMin", "Where", "ReduceMax",
                     "ReduceMin"), _NUM),
    "Equal": _NUM | {"bool"},
    "Sign": _NUM | {"bfloat16"},
    "IsNaN": _F16_32_64 | {"bfloat16"},
    **dict.fromkeys(("Pow", "MatMul", "ReduceSum", "ReduceMean", "ReduceProd", "CumSum"), _BIG),
    **dict.fromkeys(("BitwiseAnd", "BitwiseOr", "BitwiseXor"), _INTS),
    **dict.fromkeys(("Expand", "Tile", "Pad"), _NUM | {"bool"}),
}


def onnx_dtype(dt: Any) -> int:
    """The ONNX TensorProto element type of a dtype."""
    return int(helper.np_dtype_to_tensor_dtype(dtype(dt).numpy))


_SCHEMA_NAMES = {"float": "float32", "double": "float64", "float8e4m3fn": "float8_e4m3fn"}


@functools.cache
def schema_types(op_type: str, opset: int, position: int = 0) -> frozenset[str] | None:
    """Dtype names the ONNX schema of ``op_type`` at ``opset`` allows for input ``position``
    (None for ops outside the default domain or without a type constraint there)."""
    if not onnx.defs.has(op_type):
        return None
    schema = onnx.defs.get_schema(op_type, opset, "")
    formal = schema.inputs[min(position, len(schema.inputs) - 1)]
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    if formal.type_str not in allowed:
        return None
    names = (t.removeprefix("tensor(").removesuffix(")") for t in allowed[formal.type_str])
    return frozenset(_SCHEMA_NAMES.get(n, n) for n in names)


def _compute_dtype(dt: DType, ok: frozenset[str]) -> DType:
    """The closest dtype in ``ok`` to compute an op that has no kernel for ``dt``."""
    prefs = ((float32, float64) if dt.is_float else (int64, int32, float64, float32))
    for cand in prefs:
        if cand.name in ok:
            return cand
    raise OnnxError(f"no ONNX Runtime kernel for dtype {dt.name}; supported: {sorted(ok)}")


class OnnxBuilder:
    """What a lowering rule sees: emits ONNX nodes and constants for one IR node.

    ``node`` is the IR node being lowered; ``opset`` and ``target`` ("ort" or "portable") let
    rules pick an encoding. Names are unique in the model and prefixed with the IR node name.
    """

    def __init__(self, ctx: LoweringContext, node: Node, prefix: str, origin: Node) -> None:
        self.ctx = ctx
        self.node = node
        self.prefix = prefix
        self.origin = origin

    @property
    def opset(self) -> int:
        """The default-domain opset being exported to."""
        return self.ctx.opset

    @property
    def target(self) -> str:
        """"ort" (cast around ONNX Runtime kernel gaps) or "portable" (plain ONNX)."""
        return self.ctx.target

    def in_type(self, i: int) -> TensorType:
        """The IR type of input ``i`` of the node."""
        v = self.node.inputs[i]
        if v is None:
            raise OnnxError(f"input {i} of {self.node.op.name} is absent")
        return v.type

    def out_type(self, i: int = 0) -> TensorType:
        """The IR type of output ``i`` of the node."""
        return self.node.outputs[i].type

    def op(self, op_type: str, *inputs: str | None, dtype: DType | None = None,
           data: Sequence[int] | None = None, back: bool = True, **attrs: Any) -> str:
        """Emit one single-output ONNX node; returns its output name.

        With ``dtype`` (the element type of the data inputs at positions ``data``, default all)
        those inputs are cast to a type the ONNX schema at this opset allows (and, for target
        "ort", that ONNX Runtime's CPU provider has a kernel for), and the result is cast back
        when ``back`` (ops whose output has the data type).
        ``domain="com.microsoft"`` emits an ONNX Runtime contrib op (its opset is imported).
        """
        return self.op_n(op_type, 1, *inputs, dtype=dtype, data=data,
                         back=(0,) if back else (), **attrs)[0]

    def op_n(self, op_type: str, n: int, *inputs: str | None, dtype: DType | None = None,
             data: Sequence[int] | None = None, back: Sequence[int] = (0,),
             **attrs: Any) -> tuple[str, ...]:
        """Emit one ONNX node with ``n`` outputs (see :meth:`op` for the dtype handling)."""
        if dtype is None or attrs.get("domain"):
            return self._emit(op_type, n, inputs, attrs)
        positions = range(len(inputs)) if data is None else data
        ok = schema_types(op_type, self.opset, min(positions, default=0))
        if self.target == "ort" and op_type in ORT_CPU_TYPES:
            ok = ORT_CPU_TYPES[op_type] if ok is None else ok & ORT_CPU_TYPES[op_type]
        if ok is None or dtype.name in ok:
            return self._emit(op_type, n, inputs, attrs)
        work = _compute_dtype(dtype, ok)
        cast = [self.cast(x, work) if i in positions and x else x for i, x in enumerate(inputs)]
        outs = list(self._emit(op_type, n, cast, attrs))
        for i in back:
            outs[i] = self.cast(outs[i], dtype)
        return tuple(outs)

    def _emit(self, op_type: str, n: int, inputs: Sequence[str | None],
              attrs: dict[str, Any]) -> tuple[str, ...]:
        base = f"{self.prefix}/{op_type}"
        outs = tuple(self.ctx.fresh_value(base if n == 1 else f"{base}:{i}") for i in range(n))
        clean = {k: v for k, v in attrs.items() if v is not None}
        domain = clean.pop("domain", "")
        if domain:
            self.ctx.domains[domain] = 1
        names = [x or "" for x in inputs]
        while names and not names[-1]:  # trailing absent inputs are dropped (ORT crashes on some)
            names.pop()
        proto = helper.make_node(op_type, names, list(outs), name=self.ctx.fresh_node(base),
                                 domain=domain or None, **clean)
        self.ctx.add_node(proto, self.origin)
        return outs

    def cast(self, x: str, to: Any) -> str:
        """Cast ``x`` to dtype ``to``."""
        return self._emit("Cast", 1, [x], {"to": onnx_dtype(to)})[0]

    def constant(self, value: Any, dt: Any | None = None, *, name: str = "const") -> str:
        """An initializer holding ``value`` (cast to ``dt`` if given); returns its name."""
        arr = np.asarray(value, dtype=dtype(dt).numpy if dt is not None else None)
        tname = self.ctx.fresh_value(f"{self.prefix}/{name}")
        self.ctx.initializers.append(numpy_helper.from_array(arr, tname))
        return tname

    def ints(self, values: Iterable[int], *, name: str = "ints") -> str:
        """A 1-D int64 initializer (ONNX inputs such as shapes, axes, pads)."""
        return self.constant(np.asarray(list(values), dtype=np.int64).reshape(-1), name=name)

    def scalar(self, value: Any, dt: Any, *, name: str = "scalar") -> str:
        """A 0-d initializer of dtype ``dt``."""
        return self.constant(np.asarray(value).astype(dtype(dt).numpy), name=name)

    def lower(self, node: Node, inputs: Sequence[str | None]) -> tuple[str, ...]:
        """Lower a nested IR node (from a decomposition) with this node's prefix and source."""
        return self.ctx.lower(node, inputs, prefix=f"{self.prefix}/{node.name}",
                              origin=self.origin)


class LoweringContext:
    """Collects the ONNX nodes and initializers of one export, with unique names and a map from
    ONNX node names to the IR nodes they came from."""

    def __init__(self, opset: int, target: str, *, training: bool = True) -> None:
        self.opset = opset
        self.target = target
        self.training = training
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.node_map: dict[str, Node] = {}
        self.domains: dict[str, int] = {}  # other operator domains used -> opset version
        # IR value -> (the IR node that produced it, that node's lowered input names): lets a
        # rule look one node back (a compare of two iotas is lowered on their columns)
        self.producers: dict[Value, tuple[Node, tuple[str | None, ...]]] = {}
        self._values: set[str] = set()
        self._node_names: set[str] = set()
        self._ir_nodes: set[str] = set()  # helper nodes never take these names

    def reserve(self, values: Iterable[str], nodes: Iterable[str] = ()) -> None:
        """Mark the IR's value names as taken, and keep its node names for its nodes."""
        self._values.update(values)
        self._ir_nodes.update(nodes)

    def _fresh(self, base: str, used: set[str], avoid: set[str] | None = None) -> str:
        name, i = base, 0
        while name in used or (avoid is not None and name in avoid):
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        return name

    def fresh_value(self, base: str) -> str:
        """An unused value name derived from ``base``."""
        return self._fresh(base, self._values)

    def fresh_node(self, base: str) -> str:
        """An unused node name derived from ``base`` (never an IR node's name)."""
        return self._fresh(base, self._node_names, self._ir_nodes)

    def add_node(self, proto: NodeProto, origin: Node) -> None:
        """Append a node made for IR node ``origin``: its source becomes the doc_string, its
        name, op, scope and origin (the last two when set) the ``lbdl.*`` metadata_props."""
        if origin.source is not None:
            proto.doc_string = str(origin.source)
        proto.metadata_props.extend([
            StringStringEntryProto(key="lbdl.node", value=origin.name),
            StringStringEntryProto(key="lbdl.op", value=origin.op.name),
        ])
        proto.metadata_props.extend(
            StringStringEntryProto(key=f"lbdl.{k}", value=v)
            for k, v in (("scope", origin.scope), ("origin", origin.origin)) if v)
        self.nodes.append(proto)
        self.node_map[proto.name] = origin

    def lower(self, node: Node, inputs: Sequence[str | None], *,
              outputs: Sequence[str] | None = None, prefix: str | None = None,
              origin: Node | None = None) -> tuple[str, ...]:
        """Lower one IR node; with ``outputs`` its results get exactly those names."""
        prefix = prefix or node.name
        origin = origin or node
        if not node.op.variadic:  # omitted trailing optional inputs reach the rule as None
            inputs = [*inputs, *[None] * (len(node.op.inputs) - len(inputs))]
        start = len(self.nodes)
        b = OnnxBuilder(self, node, prefix, origin)
        rule = LOWERINGS.get(node.op)
        try:
            if node.op is ops.dropout and not self.training:
                res: Any = inputs[0]
            elif rule is not None:
                res = rule(b, *inputs, **node.attrs)
            elif node.op.decompose is not None:
                res = _lower_decomposed(b, *inputs)
            else:
                raise OnnxError(f"onnx: no lowering for op '{node.op.name}'")
        except LbdlError as e:
            raise e.with_context(node=origin.name, op=origin.op.name,
                                 source=origin.source) from None
        except Exception as e:  # a rule bug or a bad attribute value: name the node
            raise OnnxError(f"lowering {node.op.name} failed: {type(e).__name__}: {e}",
                            node=origin.name, op=origin.op.name, source=origin.source) from None
        results = (res,) if isinstance(res, str) else tuple(res)
        for v in node.outputs:
            self.producers[v] = (node, tuple(inputs))
        if len(results) != len(node.outputs):
            raise OnnxError(f"lowering of {node.op.name} returned {len(results)} results for "
                            f"{len(node.outputs)} outputs", node=origin.name, op=origin.op.name)
        if outputs is not None:
            results = self._bind(start, results, outputs, b)
        self._name_primary(start, results[0], prefix)
        return results

    def _bind(self, start: int, results: tuple[str, ...], outputs: Sequence[str],
              b: OnnxBuilder) -> tuple[str, ...]:
        """Give the results their final names: rename a fresh result, else add an Identity."""
        made = {o for n in self.nodes[start:] for o in n.output}
        renamed: dict[str, str] = {}
        for r, want in zip(results, outputs, strict=True):
            if r == want:
                continue
            if r in made and r not in renamed:
                renamed[r] = want
            else:
                proto = helper.make_node("Identity", [r], [want],
                                         name=self.fresh_node(f"{b.prefix}/Identity"))
                self.add_node(proto, b.origin)
        for n in self.nodes[start:]:
            n.output[:] = [renamed.get(o, o) for o in n.output]
            n.input[:] = [renamed.get(i, i) for i in n.input]
        return tuple(outputs)

    def _name_primary(self, start: int, first: str, name: str) -> None:
        """Name the node producing ``first`` exactly ``name`` (the IR node name) if possible."""
        for n in reversed(self.nodes[start:]):
            if first in n.output:
                if n.name != name and name not in self._node_names:
                    origin = self.node_map.pop(n.name)
                    self._node_names.discard(n.name)
                    n.name = name
                    self._node_names.add(name)
                    self.node_map[name] = origin
                return


def _lower_decomposed(b: OnnxBuilder, *inputs: str | None) -> tuple[str, ...]:
    """Inline the op's decomposition: build it as a small IR graph and lower node by node."""
    node = b.node
    sb = GraphBuilder(f"{node.op.name}_decomposed")
    ins = [sb.input(f"in{i}", v.type.dtype, v.type.shape) if v is not None else None
           for i, v in enumerate(node.inputs)]
    with sb:
        out = node.op.decompose(*ins, **node.attrs)  # type: ignore[misc]
    sub = sb.build(list(out) if isinstance(out, tuple | list) else [out], verify=False)
    env = {v: name for v, name in zip(ins, inputs[:len(ins)], strict=True)
           if v is not None and name}
    for n in sub.nodes:
        env.update(zip(n.outputs, b.lower(n, [env[v] if v is not None else None
                                              for v in n.inputs]), strict=True))
    return tuple(env[v] for v in sub.outputs)


def simple(op_type: str, *, typed: bool = True, back: bool = True) -> Lowering:
    """A rule emitting one ONNX node of ``op_type`` on all the inputs, with the node's
    attributes passed through (same names). ``typed``: cast around ONNX Runtime kernel gaps
    (see :meth:`OnnxBuilder.op`); ``back``: the result has the input's dtype."""

    def rule(b: OnnxBuilder, *inputs: str | None, **attrs: Any) -> str:
        dt = b.in_type(0).dtype if typed and b.node.inputs else None
        return b.op(op_type, *inputs, dtype=dt, back=back, **attrs)

    rule.__name__ = f"_{op_type.lower()}_onnx"
    return rule


# Importing the rule modules registers them.
from . import (  # noqa: E402, F401
    lowering_bn_train,
    lowering_cache,
    lowering_control,
    lowering_dynamic,
    lowering_elementwise,
    lowering_fused,
    lowering_nn,
    lowering_quant,
    lowering_reduce,
    lowering_shape,
)
