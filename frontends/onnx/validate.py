"""One pass over a ModelProto before any handler sees it: versions, types, sizes, attributes.

``validate_model`` runs once per import. It refuses, with a typed error naming the file and the
node, tensor or attribute:

- IR versions and opsets outside the supported range;
- unknown element types (initializers, inputs, tensor attributes, ``to``/``dtype`` attributes);
- negative dims, and tensors or inputs larger than the allocation limit (ResourceError);
- external data whose offset/length is not a non-negative integer;
- sparse initializers;
- attributes whose kind does not match the op's ONNX schema (a float where an int is
  expected, a list where a scalar is expected, an attribute without a value), and missing
  required attributes.

So every handler -- present and future -- receives attributes of the kinds its schema declares.
``check_fold`` bounds the outputs of shape-generating ops (ConstantOfShape, Range, Tile, Expand,
Resize) before the import-time folder computes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto
from onnx.defs import onnx_opset_version

from lbdl_graph.errors import OnnxError
from lbdl_graph.limits import check_alloc

from .context import OnnxUnsupportedError
from .loader import Source

__all__ = ["MAX_IR_VERSION", "MIN_IR_VERSION", "check_fold", "validate_model"]

MIN_IR_VERSION = 3
MAX_IR_VERSION = onnx.IR_VERSION
_DEFAULT = ("", "ai.onnx")
_DTYPE_ATTRS = ("to", "dtype", "output_dtype", "saturate_dtype")
_SHAPE_OPS = ("ConstantOfShape", "Range", "Tile", "Expand", "Resize")
_KIND = {v: AttributeProto.AttributeType.Name(v).lower() for v in
         AttributeProto.AttributeType.values()}


def _valid_elem(t: int) -> bool:
    return t in TensorProto.DataType.values() and t != TensorProto.UNDEFINED


def _itemsize(t: int) -> float:
    if t in (TensorProto.INT4, TensorProto.UINT4):
        return 0.5
    try:
        return float(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)).itemsize)
    except Exception:  # string and types without a NumPy twin: count one byte per element
        return 1.0


def _versions(model: ModelProto, src: Source) -> dict[str, int]:
    if not MIN_IR_VERSION <= model.ir_version <= MAX_IR_VERSION:
        raise src.error(f"ONNX IR version {model.ir_version} is not supported (supported: "
                        f"{MIN_IR_VERSION}..{MAX_IR_VERSION}); re-export the model with a "
                        "supported IR version")
    opsets: dict[str, int] = {}
    newest = onnx_opset_version()
    for o in model.opset_import:
        domain = "" if o.domain in _DEFAULT else o.domain
        if o.version < 1:
            raise src.error(f"opset_import of domain '{o.domain or 'ai.onnx'}' has version "
                            f"{o.version}; versions start at 1")
        if domain == "" and o.version > newest:
            raise src.error(f"opset {o.version} is newer than the newest this importer "
                            f"knows (supported: 1..{newest}; opsets below 13 are converted); "
                            "re-export the model with a supported opset")
        opsets[domain] = int(o.version)
    return opsets


def _tensor(t: TensorProto, src: Source, what: str) -> None:
    """Element type, dims, external-data fields and size of one TensorProto."""
    if not _valid_elem(t.data_type):
        raise src.error(f"{what}: unknown tensor element type {t.data_type} (not an ONNX "
                        "TensorProto.DataType); the file is corrupted")
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise src.error(f"{what}: negative dims {dims}")
    if t.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        for key in ("offset", "length"):
            if key in info:
                v = info[key].strip()
                if not v.isdigit():
                    raise src.error(f"{what}: external data {key} {info[key]!r} is not a "
                                    "non-negative integer")
                if key == "length":
                    check_alloc([int(v)], 1, f"{src.display}: {what} (external data length)")
    check_alloc(dims, _itemsize(t.data_type), f"{src.display}: {what}")


def _attribute(a: AttributeProto, node: NodeProto, schema: onnx.defs.OpSchema | None,
               src: Source, opsets: dict[str, int]) -> None:
    where = f"attribute '{a.name}' of node '{node.name or node.op_type}' ({node.op_type})"
    if a.type == AttributeProto.UNDEFINED and not a.ref_attr_name:
        raise src.error(f"{where} has no value (attribute type UNDEFINED)",
                        node=node.name, op=node.op_type)
    if schema is not None and a.name in schema.attributes and not a.ref_attr_name:
        want = int(schema.attributes[a.name].type.value)  # type: ignore[attr-defined]
        if want != AttributeProto.UNDEFINED and int(a.type) != want:
            raise src.error(f"{where} is a {_KIND.get(a.type, a.type)}, the op's schema "
                            f"expects a {_KIND.get(want, want)}", node=node.name,
                            op=node.op_type)
    if (a.type == AttributeProto.INT and a.name in _DTYPE_ATTRS and not _valid_elem(a.i)
            and schema is not None and a.name in schema.attributes):
        raise src.error(f"{where}: {a.i} is not an ONNX element type", node=node.name,
                            op=node.op_type)
    if a.type == AttributeProto.TENSOR:
        _tensor(a.t, src, where)
    elif a.type == AttributeProto.TENSORS:
        for t in a.tensors:
            _tensor(t, src, where)
    elif a.type == AttributeProto.SPARSE_TENSOR:
        raise OnnxUnsupportedError(f"{src.display}: {where}: sparse tensors are not supported",
                                   features=[(node.name, node.op_type, "sparse tensor")])
    elif a.type == AttributeProto.GRAPH:
        _graph(a.g, src, opsets)
    elif a.type == AttributeProto.GRAPHS:
        for g in a.graphs:
            _graph(g, src, opsets)


def _schema(node: NodeProto, opsets: dict[str, int]) -> onnx.defs.OpSchema | None:
    domain = "" if node.domain in _DEFAULT else node.domain
    version = opsets.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:  # unknown op or domain: the importer reports it as unsupported
        return None


def _graph(g: GraphProto, src: Source, opsets: dict[str, int]) -> None:
    if g.sparse_initializer:
        raise OnnxUnsupportedError(f"{src.display}: sparse initializers are not supported",
                                   features=[("", "", "sparse initializer")])
    for t in g.initializer:
        _tensor(t, src, f"initializer '{t.name}'")
    for vi in g.input:
        tt = vi.type
        if not tt.HasField("tensor_type"):
            continue  # the importer reports non-tensor inputs
        what = f"graph input '{vi.name}'"
        if not _valid_elem(tt.tensor_type.elem_type):
            raise src.error(f"{what}: unknown element type {tt.tensor_type.elem_type}")
        dims = tt.tensor_type.shape.dim
        bad = [int(d.dim_value) for d in dims if d.HasField("dim_value") and d.dim_value < 0]
        if bad:
            raise src.error(f"{what}: negative dim {bad[0]} in its shape; dims are >= 0 "
                            "(use a dim_param for a dynamic size)")
        # the static dims alone (each dynamic one taken as 1) bound every feed from below
        static = [int(d.dim_value) for d in dims if d.HasField("dim_value")]
        dynamic = "" if len(static) == len(dims) else " (at least; each dynamic dim counted as 1)"
        check_alloc(static, _itemsize(tt.tensor_type.elem_type), f"{src.display}: {what}{dynamic}")
    for node in g.node:
        schema = _schema(node, opsets)
        for a in node.attribute:
            _attribute(a, node, schema, src, opsets)
        if schema is not None:
            _arity(node, schema, src)
            given = {a.name for a in node.attribute}
            missing = [k for k, v in schema.attributes.items() if v.required and k not in given]
            if missing:
                raise src.error(f"node '{node.name or node.op_type}' ({node.op_type}) lacks "
                                f"required attribute(s) {missing}", node=node.name,
                                op=node.op_type)


def _arity(node: NodeProto, schema: onnx.defs.OpSchema, src: Source) -> None:
    """The number of inputs and outputs the schema allows."""
    for what, n, lo, hi in (("inputs", len(node.input), schema.min_input, schema.max_input),
                            ("outputs", len(node.output), schema.min_output,
                             schema.max_output)):
        if not lo <= n <= hi:
            span = f"{lo}..{hi}" if hi < 1 << 30 else f"at least {lo}"
            raise src.error(f"node '{node.name or node.op_type}' ({node.op_type}) has {n} "
                            f"{what}; the op's schema takes {span}", node=node.name,
                            op=node.op_type)


def validate_model(model: ModelProto, src: Source) -> None:
    """Check a whole model (and its subgraphs) before import; raises OnnxError/ResourceError."""
    opsets = _versions(model, src)
    _graph(model.graph, src, opsets)


def _resize_out(ins: Sequence[np.ndarray | None], x_shape: Sequence[object] | None
                ) -> list[int] | None:
    if len(ins) > 3 and ins[3] is not None and ins[3].size:
        return [int(v) for v in ins[3].reshape(-1)]
    if x_shape is not None and len(ins) > 2 and ins[2] is not None and ins[2].size:
        scales = [float(s) for s in ins[2].reshape(-1)]
        if any(not math.isfinite(s) or s < 0 for s in scales):
            raise OnnxError(f"Resize scales {scales} must be finite and non-negative")
        return [math.floor(d * s) if isinstance(d, int) else 1
                for d, s in zip(x_shape, scales, strict=False)]
    return None


def _out_shape(op: str, ins: Sequence[np.ndarray | None],
               shapes: Sequence[Sequence[object] | None], attrs: dict[str, object]
               ) -> list[int] | None:
    """The output shape of a shape-generating op from its known inputs (None: not one)."""
    if op == "ConstantOfShape" and ins and ins[0] is not None:
        return [int(v) for v in ins[0].reshape(-1)]
    if op == "Range" and any(i is not None and i.size != 1 for i in ins):
        raise OnnxError("Range takes scalar start, limit and delta, got shapes "
                        f"{[list(i.shape) if i is not None else '?' for i in ins]}")
    if op == "Range" and len(ins) == 3 and all(i is not None and i.size == 1 for i in ins):
        start, limit, delta = (float(np.asarray(i).reshape(-1)[0]) for i in ins)
        if delta == 0 or not all(math.isfinite(v) for v in (start, limit, delta)):
            raise OnnxError(f"Range with start={start}, limit={limit}, delta={delta}: delta "
                            "must be a non-zero finite number")
        return [max(math.ceil((limit - start) / delta), 0)]
    if op == "Tile" and len(ins) == 2 and all(i is not None for i in ins):
        reps = [int(v) for v in ins[1].reshape(-1)]  # type: ignore[union-attr]
        return [d * r for d, r in zip(ins[0].shape, reps, strict=False)]  # type: ignore
    if op == "Expand" and len(ins) == 2 and all(i is not None for i in ins):
        shape = [int(v) for v in ins[1].reshape(-1)]  # type: ignore[union-attr]
        x = list(ins[0].shape)  # type: ignore[union-attr]
        r = max(len(x), len(shape))
        x, shape = [1] * (r - len(x)) + x, [1] * (r - len(shape)) + shape
        return [max(a, b) if min(a, b) != 0 else 0 for a, b in zip(x, shape, strict=True)]
    if op == "Resize" and ins:
        x_shape = ins[0].shape if ins[0] is not None else (shapes[0] if shapes else None)
        return _resize_out(ins, x_shape)
    return None


def check_fold(node: NodeProto, ins: Sequence[np.ndarray | None],
               shapes: Sequence[Sequence[object] | None], attrs: dict[str, object],
               src: Source) -> None:
    """Refuse a shape-generating node whose output would be negative-sized or too large.

    ``ins`` are the inputs known at import time, ``shapes`` the static shapes of the others.
    """
    if node.op_type not in _SHAPE_OPS:
        return
    try:
        shape = _out_shape(node.op_type, ins, shapes, attrs)
    except OnnxError as e:
        raise src.error(f"node '{node.name or node.op_type}' ({node.op_type}): {e.message}",
                        node=node.name, op=node.op_type) from None
    if shape is None:
        return
    name = node.name or node.op_type
    if any(d < 0 for d in shape):
        raise src.error(f"node '{name}' ({node.op_type}): output shape {shape} has a negative "
                        "dim", node=node.name, op=node.op_type)
    value = attrs.get("value")
    itemsize = (value.dtype.itemsize if isinstance(value, np.ndarray) else 4
                ) if node.op_type == "ConstantOfShape" else (
        ins[0].dtype.itemsize if ins[0] is not None else 4)
    check_alloc(shape, itemsize, f"{src.display}: node '{name}' ({node.op_type}) output",
                node=node.name, op=node.op_type)


def check_outputs(node: NodeProto, values: Sequence[object], src: Source) -> None:
    """Refuse a node whose imported outputs have static shapes over the allocation limit."""
    for v in values:
        shape = getattr(v, "shape", None)
        dt = getattr(v, "dtype", None)
        if shape is None or not all(isinstance(d, int) for d in shape):
            continue
        if any(d < 0 for d in shape):
            raise src.error(f"node '{node.name or node.op_type}' ({node.op_type}): output "
                            f"'{getattr(v, 'name', '')}' has negative dims {list(shape)}",
                            node=node.name, op=node.op_type)
        itemsize = float(getattr(dt, "itemsize", 0) or 4)
        check_alloc(shape, itemsize, f"{src.display}: node '{node.name or node.op_type}' "
                    f"({node.op_type}) output '{getattr(v, 'name', '')}'", node=node.name,
                    op=node.op_type)
