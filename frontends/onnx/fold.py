"""Import-time evaluation: folding nodes whose inputs are all known, and tensor types.

A node whose inputs are constants (Constant nodes, integer initializers, shapes of static
tensors and earlier folded values) is computed with ``onnx.reference`` -- the ONNX semantics
themselves -- and its outputs become known tensors, materialised as constants only where a node
uses them as tensors. This is what turns ``Shape -> Gather -> Concat -> Reshape`` chains into
static reshapes, and it also removes constant subgraphs made of ops the importer does not map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lbdl_graph.dimexpr import canonical, dim_add, dim_div, dim_mul, dim_prod, dim_sub, dims_equal

from .context import NodeCtx
from .loader import ONNX_DTYPES
from .ops_shape import constant_value
from .validate import check_fold

if TYPE_CHECKING:
    from .importer import Importer

__all__ = ["DEFAULT_DOMAINS", "fold_node", "type_proto"]

DEFAULT_DOMAINS = ("", "ai.onnx")
FOLD_MAX_ELEMENTS = 1 << 20  # inputs larger than this are not folded at import time
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Bernoulli", "Multinomial", "Dropout"}
ONNX_ELEM = {name: elem for elem, name in ONNX_DTYPES.items()}


def fold_node(imp: Importer, n: NodeCtx) -> bool:
    """Compute a node at import time when all its inputs are known; True if done."""
    p = n.proto
    if p.domain not in DEFAULT_DOMAINS or p.op_type in NONDETERMINISTIC:
        return False
    if p.op_type in ("Shape", "Size") and n.has(0):
        name = p.input[0]
        shape = (imp.known[name].shape if name in imp.known else
                 imp.values[name].shape if name in imp.values else
                 imp.inits[name].shape if name in imp.inits else None)
        if shape is None or not all(isinstance(d, int) for d in shape):
            return False
        if p.op_type == "Size":
            out = np.asarray(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
        else:
            r = len(shape)
            start, end = n.attr("start", 0), n.attr("end", r)
            start = min(max(start + r if start < 0 else start, 0), r)
            end = min(max(end + r if end < 0 else end, 0), r)
            out = np.asarray(shape[start:end], dtype=np.int64)
        imp.known[p.output[0]] = out
        return True
    if p.op_type == "Constant":
        imp.known[p.output[0]] = constant_value(n)
        return True
    shapes = [tuple(imp.values[i].shape) if i in imp.values else None for i in p.input]
    check_fold(p, [imp.constant_value(i) if i else None for i in p.input], shapes, n.attrs,
               imp.src)
    names = [i for i in p.input if i]
    if any(i not in imp.known for i in names):
        return False
    if sum(imp.known[i].size for i in names) > FOLD_MAX_ELEMENTS:
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in p.attribute):
        return False
    try:
        inits = [numpy_helper.from_array(imp.known[i], i) for i in dict.fromkeys(names)]
        outs = [helper.make_empty_tensor_value_info(o) for o in p.output if o]
        graph = helper.make_graph([p], "fold", [], outs, inits)
        model = helper.make_model(graph, opset_imports=list(imp.model.opset_import))
        model.ir_version = imp.model.ir_version or model.ir_version
        from onnx.reference import ReferenceEvaluator

        res = ReferenceEvaluator(model).run(None, {})
    except Exception:  # the op's own handler will deal with it (or report it)
        return False
    if not all(isinstance(r, np.ndarray) for r in res):
        return False
    for o, r in zip([o for o in p.output if o], res, strict=True):
        imp.known[o] = r
    return True


def type_proto(imp: Importer, name: str) -> onnx.TypeProto | None:
    """The ONNX type of a tensor as far as the import knows it."""
    if name in imp.values:
        v = imp.values[name]
        dims: list[Any] = list(v.shape)
        return helper.make_tensor_type_proto(ONNX_ELEM[v.dtype.name], dims)
    arr = imp.constant_value(name)
    if arr is None:
        return None
    try:
        return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(arr.dtype),
                                             list(arr.shape))
    except Exception:
        return None


_SYMBOLIC_OPS = ("Shape", "Size", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast",
                 "Identity", "Mul", "Add", "Sub", "Div", "Equal", "Where", "Max", "Min", "Neg",
                 "ReduceProd", "Reshape", "Expand", "ConstantOfShape")
_INT = (int, np.integer)


def _is_int(d: Any) -> bool:
    return isinstance(d, _INT) and not isinstance(d, bool | np.bool_)


def _dim_arith(op: str, a: Any, b: Any) -> Any:
    """One dim of a shape computation, in the canonical form of :mod:`lbdl_graph.dimexpr`."""
    if _is_int(a) and _is_int(b):
        a, b = int(a), int(b)
        if op == "Div":
            if b == 0:
                raise ZeroDivisionError
            return int(a / b)
        return {"Mul": a * b, "Add": a + b, "Sub": a - b, "Max": max(a, b),
                "Min": min(a, b)}[op]
    if op == "Max" or op == "Min":
        if dims_equal(a, b):
            return canonical(a)
        # a symbolic dim is at least 1: max(d, 1) = d and min(d, 1) = 1 (also for 0 and <0)
        other = b if _is_int(b) else a if _is_int(a) else None
        if other is None or int(other) > 1:
            raise ValueError("undecidable")
        sym = a if other is b else b
        return canonical(sym) if op == "Max" else int(other)
    fn = {"Mul": dim_mul, "Add": dim_add, "Sub": dim_sub, "Div": dim_div}[op]
    return fn(a if not _is_int(a) else int(a), b if not _is_int(b) else int(b))


def _dim_equal(a: Any, b: Any) -> bool:
    """Equality of two dims; a symbolic dim never equals a negative constant. Raises
    ValueError when it depends on the run-time sizes."""
    if _is_int(a) and _is_int(b):
        return int(a) == int(b)
    if dims_equal(a, b):
        return True
    c = a if _is_int(a) else b if _is_int(b) else None
    if c is not None and int(c) < 0:
        return False
    raise ValueError("undecidable")


def fold_symbolic(imp: Importer, n: NodeCtx) -> bool:
    """Propagate shape values that contain symbolic dims (an object array of ints and dim
    names) through the usual shape arithmetic, so that ``Reshape(x, Concat(Shape(x)[:1],
    [-1]))`` on a dynamic batch still imports. True if the node was folded that way."""
    p = n.proto
    if p.domain not in DEFAULT_DOMAINS or p.op_type not in _SYMBOLIC_OPS:
        return False
    ins = [p.input[i] if i < len(p.input) else "" for i in range(max(len(p.input), 1))]
    if p.op_type in ("Shape", "Size"):
        v = imp.values.get(ins[0])
        src = imp.symbolic.get(ins[0])
        if v is None and src is None:
            return False
        shape = list(v.shape) if v is not None else list(np.asarray(src).shape)
        if p.op_type == "Size":
            size = dim_prod(shape)
            if isinstance(size, int):
                imp.known[p.output[0]] = np.asarray(size, dtype=np.int64)
            else:
                imp.symbolic[p.output[0]] = np.asarray(size, dtype=object)
            return True
        dims = np.empty(len(shape), dtype=object)
        dims[:] = [canonical(d) for d in shape]
        r = len(dims)
        start, end = n.attr("start", 0), n.attr("end", r)
        out = dims[slice(start, end)]
        if all(_is_int(d) for d in out):
            imp.known[p.output[0]] = out.astype(np.int64)
        else:
            imp.symbolic[p.output[0]] = out
        return True
    if not any(i in imp.symbolic for i in ins if i):
        return False
    arrays: list[Any] = []
    for i in ins:
        a = imp.symbolic.get(i) if i else None
        if a is None and i:
            a = imp.known.get(i)
            if a is None:
                return False
        arrays.append(a)
    x = arrays[0]
    try:
        if p.op_type == "Cast" and n.attr("to") not in (6, 7):  # only int32/int64 stay dims
            return False
        if p.op_type in ("Cast", "Identity"):
            out = x
        elif p.op_type in ("Mul", "Add", "Sub", "Div", "Max", "Min"):
            if len(arrays) != 2:
                return False
            fn = np.frompyfunc(lambda a, b: _dim_arith(p.op_type, a, b), 2, 1)
            out = fn(np.asarray(x, dtype=object), np.asarray(arrays[1], dtype=object))
        elif p.op_type == "Neg":
            out = np.frompyfunc(lambda a: _dim_arith("Sub", 0, a), 1, 1)(
                np.asarray(x, dtype=object))
        elif p.op_type == "Equal":
            eq = np.frompyfunc(_dim_equal, 2, 1)
            res = eq(np.asarray(x, dtype=object), np.asarray(arrays[1], dtype=object))
            imp.known[p.output[0]] = np.asarray(res, dtype=bool)
            return True
        elif p.op_type == "Where":
            if x is None or x.dtype == object:
                return False
            out = np.where(np.asarray(x, dtype=bool), np.asarray(arrays[1], dtype=object),
                           np.asarray(arrays[2], dtype=object))
        elif p.op_type == "ReduceProd":
            if x.ndim != 1 or (len(arrays) > 1 and arrays[1] is not None) or n.attr("axes"):
                return False
            out = np.asarray(dim_prod(list(x)), dtype=object)
            if n.attr("keepdims", 1):
                out = out.reshape(1)
        elif p.op_type in ("Reshape", "Expand", "ConstantOfShape"):
            return _fold_shape_layout(imp, n, arrays)
        elif p.op_type == "Concat":
            out = np.concatenate([np.asarray(a, dtype=object) for a in arrays], axis=n.attr("axis"))
        elif p.op_type == "Gather":
            if np.asarray(arrays[1]).dtype == object:
                return False
            out = np.take(x, np.asarray(arrays[1], dtype=np.int64), axis=n.attr("axis", 0))
        elif p.op_type == "Unsqueeze":
            axes = n.attr("axes") or [int(a) for a in np.asarray(arrays[1]).reshape(-1)]
            out = x
            for a in sorted(a % (x.ndim + len(axes)) for a in axes):
                out = np.expand_dims(out, a)
        elif p.op_type == "Squeeze":
            axes = n.attr("axes") or ([int(a) for a in np.asarray(arrays[1]).reshape(-1)]
                                      if len(arrays) > 1 and arrays[1] is not None else None)
            out = np.squeeze(x, axis=tuple(axes) if axes is not None else None)
        else:  # Slice of a 1-D shape value
            starts, ends = (int(np.asarray(a).reshape(-1)[0]) for a in arrays[1:3])
            steps = int(np.asarray(arrays[4]).reshape(-1)[0]) if len(arrays) > 4 and \
                arrays[4] is not None else 1
            if x.ndim != 1:
                return False
            out = x[slice(starts, ends, steps)]
    except Exception:
        return False
    _store(imp, p.output[0], out)
    return True


def _store(imp: Importer, name: str, out: Any) -> None:
    out = np.asarray(out, dtype=object)
    out = np.frompyfunc(lambda d: int(d) if _is_int(d) else canonical(d), 1, 1)(out) \
        if out.size else out
    out = np.asarray(out, dtype=object)
    if all(_is_int(d) for d in out.reshape(-1)):
        imp.known[name] = out.astype(np.int64)
    else:
        imp.symbolic[name] = out


def _fold_shape_layout(imp: Importer, n: NodeCtx, arrays: list[Any]) -> bool:
    """Reshape / Expand of a small shape value, or ConstantOfShape with a symbolic count,
    folded as shape data (the legacy exporter builds index vectors that way)."""
    p = n.proto
    x = np.asarray(arrays[0], dtype=object)
    if p.op_type == "ConstantOfShape":
        return False  # a symbolic element count: a real tensor (ops_dynamic)
    if len(arrays) < 2 or arrays[1] is None or np.asarray(arrays[1]).dtype == object:
        return False
    if x.dtype != object or x.size > 64:
        return False
    shape = [int(v) for v in np.asarray(arrays[1]).reshape(-1)]
    if p.op_type == "Reshape":
        out = x.reshape([x.shape[i] if t == 0 and not n.attr("allowzero", 0) else t
                         for i, t in enumerate(shape)])
    else:
        out = np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy()
    _store(imp, p.output[0], out)
    return True
