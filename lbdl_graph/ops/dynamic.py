"""Ops whose shape operand is a run-time int64 tensor (imported dynamic-shape models).

A model exported with dynamic axes computes shapes at run time (``Shape -> Gather -> Concat ->
Reshape``). Where the importer cannot turn such a shape into attributes it keeps it as a tensor
and uses these ops. Each carries its output dims as the attribute ``dims`` (ints and symbolic
expressions, see :mod:`lbdl_graph.dimexpr`), so types stay exact at build time; the kernels
check at run time that the shape they get matches those dims.
"""

from __future__ import annotations

from typing import Any

from ..dtypes import int64
from ..errors import ShapeError
from ..opdef import Attr, Trait, defop
from ..shapes import Shape
from ..shapes import shape_of as check_shape
from ..types import TensorType
from ._rules import require

S, D = Trait.SHAPE, Trait.DIFFERENTIABLE


def _dims(dims: Any, what: str) -> Shape:
    if not isinstance(dims, tuple | list):
        raise ShapeError(f"{what}: dims must be a tuple of ints and dim names, got {dims!r}")
    return check_shape(dims)


def _shape_vector(t: TensorType, what: str, rank: int | None = None) -> None:
    require(t, what, kinds=("int",))
    if t.ndim != 1:
        raise ShapeError(f"{what} must be a 1-D int tensor, got {t}")
    if rank is not None and isinstance(t.shape[0], int) and t.shape[0] != rank:
        raise ShapeError(f"{what} {t} has {t.shape[0]} entries, expected {rank}")


def _shape_of_rule(x: TensorType, *, start: int, end: int | None) -> TensorType:
    r = x.ndim
    s = min(max(start + r if start < 0 else start, 0), r)
    e = r if end is None else min(max(end + r if end < 0 else end, 0), r)
    return TensorType(int64, (max(e - s, 0),))


shape_of = defop("shape_of", ("x",), infer=_shape_of_rule,
                 attrs=(Attr("start", "int", 0), Attr("end", "int", None, True)),
                 traits=(S,), onnx="Shape",
                 doc="the shape of x as an int64 vector (dims start:end)")


def _dynamic_reshape_rule(x: TensorType, shape: TensorType, *, dims: Any,
                          allowzero: bool) -> TensorType:
    out = _dims(dims, "dynamic_reshape")
    _shape_vector(shape, "dynamic_reshape shape", len(out))
    return x.with_shape(out)


dynamic_reshape = defop("dynamic_reshape", ("x", "shape"), infer=_dynamic_reshape_rule,
                        attrs=(Attr("dims", "any"), Attr("allowzero", "bool", False)),
                        traits=(S, D), onnx="Reshape",
                        doc="reshape to a run-time shape (ONNX Reshape); dims gives the type")


def _dynamic_expand_rule(x: TensorType, shape: TensorType, *, dims: Any) -> TensorType:
    out = _dims(dims, "dynamic_expand")
    _shape_vector(shape, "dynamic_expand shape", len(out))
    if x.ndim > len(out):
        raise ShapeError(f"dynamic_expand: {x} has more axes than dims {tuple(out)}")
    return x.with_shape(out)


dynamic_expand = defop("dynamic_expand", ("x", "shape"), infer=_dynamic_expand_rule,
                       attrs=(Attr("dims", "any"),), traits=(S, D), onnx="Expand",
                       doc="broadcast x with a run-time shape (ONNX Expand); dims gives the type")


def _dynamic_slice_rule(x: TensorType, starts: TensorType, ends: TensorType, *,
                        axes: tuple[int, ...], steps: tuple[int, ...] | None,
                        dims: Any) -> TensorType:
    out = _dims(dims, "dynamic_slice")
    if len(out) != x.ndim:
        raise ShapeError(f"dynamic_slice: dims {tuple(out)} must have the rank of {x}")
    _shape_vector(starts, "dynamic_slice starts", len(axes))
    _shape_vector(ends, "dynamic_slice ends", len(axes))
    if steps is not None and len(steps) != len(axes):
        raise ShapeError(f"dynamic_slice: {len(steps)} steps for {len(axes)} axes")
    return x.with_shape(out)


dynamic_slice = defop("dynamic_slice", ("x", "starts", "ends"), infer=_dynamic_slice_rule,
                      attrs=(Attr("axes", "ints"), Attr("steps", "ints", None, True),
                             Attr("dims", "any")),
                      traits=(S,), onnx="Slice",
                      doc="slice with run-time starts and ends (ONNX Slice); dims gives the type")


def _dynamic_range_rule(start: TensorType, limit: TensorType, delta: TensorType, *,
                        dims: Any) -> TensorType:
    out = _dims(dims, "dynamic_range")
    if len(out) != 1:
        raise ShapeError(f"dynamic_range: dims {tuple(out)} must have one entry")
    for t, what in ((start, "start"), (limit, "limit"), (delta, "delta")):
        if t.ndim != 0 or t.dtype != start.dtype:
            raise ShapeError(f"dynamic_range: {what} must be a scalar of {start.dtype.name}, "
                             f"got {t}")
    return TensorType(start.dtype, out)


dynamic_range = defop("dynamic_range", ("start", "limit", "delta"), infer=_dynamic_range_rule,
                      attrs=(Attr("dims", "any"),), onnx="Range",
                      doc="start, start+delta, ... below limit (ONNX Range); dims gives the type")
