"""Reductions, arg-reductions, softmax, cumulative sums, top-k and the k-th largest entry."""

from __future__ import annotations

from typing import Any

from ..dtypes import int64
from ..errors import OpError, ShapeError
from ..opdef import Attr, OpDef, Trait, defop
from ..shapes import fmt_shape, normalize_axis
from ..types import TensorType
from ._rules import arg_reduce_rule, reduce_rule, require

R, D = Trait.REDUCTION, Trait.DIFFERENTIABLE
_AXES = (Attr("axes", "ints", None, True), Attr("keepdims", "bool", True))


def _arith_reduce_rule(x: TensorType, *, axes: tuple[int, ...] | None,
                       keepdims: bool) -> TensorType:
    """reduce_rule for sum/mean/prod, which ONNX defines on numbers only (no bool)."""
    require(x, "input", kinds=("float", "int", "uint"))
    return reduce_rule(x, axes=axes, keepdims=keepdims)


def _reduce(name: str, onnx: str, doc: str, infer: Any = _arith_reduce_rule) -> OpDef:
    return defop(name, ("x",), infer=infer, attrs=_AXES, traits=(R, D),
                 onnx=onnx, doc=doc + "; axes=None reduces all axes, axes=() none")


reduce_sum = _reduce("reduce_sum", "ReduceSum", "sum over axes")
reduce_mean = _reduce("reduce_mean", "ReduceMean", "mean over axes")
reduce_max = _reduce("reduce_max", "ReduceMax", "max over axes", reduce_rule)
reduce_min = _reduce("reduce_min", "ReduceMin", "min over axes", reduce_rule)
reduce_prod = _reduce("reduce_prod", "ReduceProd", "product over axes")

_ARG = (Attr("axis", "int", 0), Attr("keepdims", "bool", True))
argmax = defop("argmax", ("x",), infer=arg_reduce_rule, attrs=_ARG, traits=(R,),
               onnx="ArgMax", doc="index of the first max along axis (int64)")
argmin = defop("argmin", ("x",), infer=arg_reduce_rule, attrs=_ARG, traits=(R,),
               onnx="ArgMin", doc="index of the first min along axis (int64)")


def _softmax_rule(x: TensorType, *, axis: int) -> TensorType:
    require(x, "input", kinds=("float",))
    normalize_axis(axis, x.ndim)
    return x


softmax = defop("softmax", ("x",), infer=_softmax_rule, attrs=(Attr("axis", "int", -1),),
                traits=(D,), onnx="Softmax", doc="exp(x)/sum(exp(x)) along axis")
log_softmax = defop("log_softmax", ("x",), infer=_softmax_rule, attrs=(Attr("axis", "int", -1),),
                    traits=(D,), onnx="LogSoftmax", doc="x - logsumexp(x) along axis")


def _cumsum_rule(x: TensorType, *, axis: int, exclusive: bool, reverse: bool) -> TensorType:
    require(x, "input", kinds=("float", "int", "uint"))
    normalize_axis(axis, x.ndim)
    return x


cumsum = defop("cumsum", ("x",), infer=_cumsum_rule,
               attrs=(Attr("axis", "int", 0), Attr("exclusive", "bool", False),
                      Attr("reverse", "bool", False)),
               traits=(D,), onnx="CumSum", doc="cumulative sum along axis")


def _kth_largest_rule(x: TensorType, *, k: int) -> TensorType:
    require(x, "input", kinds=("float",))
    if k < 0:
        raise OpError(f"kth_largest: k must be >= 0, got {k}")
    size = 1
    for d in x.shape:
        if not isinstance(d, int):
            raise ShapeError(f"kth_largest needs a static shape, got {fmt_shape(x.shape)}")
        size *= d
    if k > size:
        raise ShapeError(f"kth_largest: k={k} exceeds the {size} entries of the input")
    return x.with_shape(())


kth_largest = defop("kth_largest", ("x",), infer=_kth_largest_rule, attrs=(Attr("k", "int"),),
                    traits=(R,), onnx="TopK",
                    doc="the k-th largest entry over all axes (0-d); k=0 gives +inf. Not "
                        "differentiable: it is a threshold (TIES trimming), compared, not used")


def _top_k_rule(x: TensorType, *, k: int, axis: int, largest: bool
                ) -> tuple[TensorType, TensorType]:
    require(x, "input", kinds=("float", "int", "uint"))
    a = normalize_axis(axis, x.ndim)
    if k < 0:
        raise OpError(f"top_k: k must be >= 0, got {k}")
    d = x.shape[a]
    if isinstance(d, int) and k > d:
        raise ShapeError(f"top_k: k={k} exceeds the {d} entries of axis {axis} of "
                         f"{fmt_shape(x.shape)}")
    shape = (*x.shape[:a], k, *x.shape[a + 1:])
    return x.with_shape(shape), TensorType(int64, shape)


top_k = defop("top_k", ("x",), infer=_top_k_rule,
              attrs=(Attr("k", "int"), Attr("axis", "int", -1), Attr("largest", "bool", True)),
              outputs=2, traits=(D,), onnx="TopK",
              doc="the k largest (or smallest) entries along axis, sorted, and their int64 "
                  "indices; ties go to the lower index (ONNX TopK)")
