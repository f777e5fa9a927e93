"""Import-time evaluation: folding nodes whose inputs are all known, and tensor types.

A node whose inputs are constants (Constant nodes, integer initializers, shapes of static
tensors and earlier folded values) is computed with ``onnx.reference`` -- the ONNX semantics
themselves -- and its outputs become known tensors, materialised as constants only where a node
uses them as tensors. This is what turns ``Shape -> Gather -> Concat -> Reshape`` chains into
static reshapes, and it also removes constant subgraphs made of ops the importer does not map.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

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


_SYMBOLIC_OPS = ("Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Identity",
                 "Mul", "Add", "Sub", "Div")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _term(d: Any) -> str:
    return str(d) if isinstance(d, int | np.integer) or _NAME.match(str(d)) else f"({d})"


def _dim_arith(op: str, a: Any, b: Any) -> Any:
    """One dim of a shape computation; symbolic results are written as the IR's shape rules
    write them (``batch*4``, ``seq+1``) so that they can match the IR's dims."""
    if isinstance(a, int | np.integer) and isinstance(b, int | np.integer):
        a, b = int(a), int(b)
        return {"Mul": a * b, "Add": a + b, "Sub": a - b, "Div": int(a / b) if b else 0}[op]
    if op == "Mul":
        if 1 in (a, b):
            return b if a == 1 else a
        syms = sorted(_term(d) for d in (a, b) if not isinstance(d, int | np.integer))
        const = [str(int(d)) for d in (a, b) if isinstance(d, int | np.integer)]
        return "*".join(syms + const)
    if op == "Add" and isinstance(b, int | np.integer):
        return a if b == 0 else f"{_term(a)}+{int(b)}"
    if op == "Sub" and isinstance(b, int | np.integer):
        return a if b == 0 else f"{_term(a)}-{int(b)}"
    if op == "Div" and b == 1:
        return a
    sign = {"Add": "+", "Sub": "-", "Div": "//"}[op]
    return f"{_term(a)}{sign}{_term(b)}"


def fold_symbolic(imp: Importer, n: NodeCtx) -> bool:
    """Propagate shape values that contain symbolic dims (an object array of ints and dim
    names) through the usual shape arithmetic, so that ``Reshape(x, Concat(Shape(x)[:1],
    [-1]))`` on a dynamic batch still imports. True if the node was folded that way."""
    p = n.proto
    if p.domain not in DEFAULT_DOMAINS or p.op_type not in _SYMBOLIC_OPS:
        return False
    ins = [p.input[i] if i < len(p.input) else "" for i in range(max(len(p.input), 1))]
    if p.op_type == "Shape":
        v = imp.values.get(ins[0])
        if v is None:
            return False
        dims = np.empty(len(v.shape), dtype=object)
        dims[:] = list(v.shape)
        r = len(dims)
        start, end = n.attr("start", 0), n.attr("end", r)
        imp.symbolic[p.output[0]] = dims[slice(start, end)]
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
        if p.op_type in ("Cast", "Identity"):
            out = x
        elif p.op_type in ("Mul", "Add", "Sub", "Div"):
            fn = np.frompyfunc(lambda a, b: _dim_arith(p.op_type, a, b), 2, 1)
            out = fn(np.asarray(x, dtype=object), np.asarray(arrays[1], dtype=object))
        elif p.op_type == "Concat":
            out = np.concatenate([np.asarray(a, dtype=object) for a in arrays], axis=n.attr("axis"))
        elif p.op_type == "Gather":
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
    out = np.asarray(out, dtype=object)
    if all(isinstance(d, int | np.integer) for d in out.reshape(-1)):
        imp.known[p.output[0]] = out.astype(np.int64)
    else:
        imp.symbolic[p.output[0]] = out
    return True
