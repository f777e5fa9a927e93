"""Reductions, arg-reductions, softmax and cumulative sums."""

from __future__ import annotations

from typing import Any

from ..opdef import Attr, OpDef, Trait, defop
from ..shapes import normalize_axis
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
