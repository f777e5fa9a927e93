"""Elementwise ops: unary math, binary arithmetic, comparisons, logic, where, cast."""

from __future__ import annotations

from typing import Any

from ..dtypes import DType, bool_
from ..opdef import Attr, Trait, defop
from ..types import TensorType
from ._rules import (
    broadcast_binary,
    compare,
    float_unary,
    integer_binary,
    logical_binary,
    numeric_binary,
    numeric_unary,
    require,
    same_type,
)

E, C, D = Trait.ELEMENTWISE, Trait.COMMUTATIVE, Trait.DIFFERENTIABLE


def _unary(name: str, onnx: str, doc: str, *, diff: bool = True, infer: Any = float_unary,
           attrs: tuple[Attr, ...] = ()) -> Any:
    return defop(name, ("x",), infer=infer, attrs=attrs, traits=(E, D) if diff else (E,),
                 onnx=onnx, doc=doc)


# ---- unary math (float) ----
neg = _unary("neg", "Neg", "-x", infer=numeric_unary)
abs_ = _unary("abs", "Abs", "|x|", infer=numeric_unary)
exp = _unary("exp", "Exp", "e**x")
log = _unary("log", "Log", "natural logarithm")
sqrt = _unary("sqrt", "Sqrt", "square root")
reciprocal = _unary("reciprocal", "Reciprocal", "1/x")
sin = _unary("sin", "Sin", "sine")
cos = _unary("cos", "Cos", "cosine")
tanh = _unary("tanh", "Tanh", "hyperbolic tangent")
sigmoid = _unary("sigmoid", "Sigmoid", "1/(1+e**-x)")
relu = _unary("relu", "Relu", "max(x, 0)")
erf = _unary("erf", "Erf", "the error function")
softplus = _unary("softplus", "Softplus", "log(1+e**x)")
leaky_relu = _unary("leaky_relu", "LeakyRelu", "x if x >= 0 else alpha*x",
                    attrs=(Attr("alpha", "float", 0.01),))
gelu = _unary("gelu", "Gelu", "x*Phi(x); approximate='tanh' uses the tanh formula",
              attrs=(Attr("approximate", "str", "none"),))
sign = _unary("sign", "Sign", "-1, 0 or 1", diff=False, infer=numeric_unary)
floor = _unary("floor", "Floor", "round down", diff=False)
ceil = _unary("ceil", "Ceil", "round up", diff=False)
round_ = _unary("round", "Round", "round half to even", diff=False)
identity = defop("identity", ("x",), infer=same_type, traits=(E, D), onnx="Identity",
                 doc="x unchanged")
stop_gradient = defop("stop_gradient", ("x",), infer=same_type, traits=(E,), onnx="Identity",
                      doc="x unchanged; no gradient flows through")


def _clip_rule(x: TensorType, *, min: float | None, max: float | None) -> TensorType:
    require(x, "input", kinds=("float", "int"))
    return x


clip = defop("clip", ("x",), infer=_clip_rule, attrs=(Attr("min", "float", None, True),
             Attr("max", "float", None, True)), traits=(E, D), onnx="Clip",
             doc="min(max(x, min), max); None leaves a side open")


def _cast_rule(x: TensorType, *, to: DType) -> TensorType:
    return x.with_dtype(to)


cast = defop("cast", ("x",), infer=_cast_rule, attrs=(Attr("to", "dtype"),), traits=(E, D),
             onnx="Cast", doc="convert to dtype `to` (float->int truncates toward zero)")

# ---- binary arithmetic ----
add = defop("add", ("a", "b"), infer=numeric_binary, traits=(E, C, D), onnx="Add", doc="a+b")
sub = defop("sub", ("a", "b"), infer=numeric_binary, traits=(E, D), onnx="Sub", doc="a-b")
mul = defop("mul", ("a", "b"), infer=numeric_binary, traits=(E, C, D), onnx="Mul", doc="a*b")
div = defop("div", ("a", "b"), infer=numeric_binary, traits=(E, D), onnx="Div",
            doc="a/b; integer division truncates toward zero (ONNX)")
pow_ = defop("pow", ("a", "b"), infer=numeric_binary, traits=(E, D), onnx="Pow", doc="a**b")
maximum = defop("maximum", ("a", "b"), infer=numeric_binary, traits=(E, C, D), onnx="Max",
                doc="elementwise max")
minimum = defop("minimum", ("a", "b"), infer=numeric_binary, traits=(E, C, D), onnx="Min",
                doc="elementwise min")
bitwise_and = defop("bitwise_and", ("a", "b"), infer=integer_binary, traits=(E, C),
                    onnx="BitwiseAnd", doc="a & b on integers")
bitwise_or = defop("bitwise_or", ("a", "b"), infer=integer_binary, traits=(E, C),
                   onnx="BitwiseOr", doc="a | b on integers")
bitwise_xor = defop("bitwise_xor", ("a", "b"), infer=integer_binary, traits=(E, C),
                    onnx="BitwiseXor", doc="a ^ b on integers")

# ---- comparisons and logic (bool results, no gradient) ----
equal = defop("equal", ("a", "b"), infer=compare, traits=(E, C), onnx="Equal", doc="a == b")
less = defop("less", ("a", "b"), infer=compare, traits=(E,), onnx="Less", doc="a < b")
less_equal = defop("less_equal", ("a", "b"), infer=compare, traits=(E,), onnx="LessOrEqual",
                   doc="a <= b")
greater = defop("greater", ("a", "b"), infer=compare, traits=(E,), onnx="Greater", doc="a > b")
greater_equal = defop("greater_equal", ("a", "b"), infer=compare, traits=(E,),
                      onnx="GreaterOrEqual", doc="a >= b")
logical_and = defop("logical_and", ("a", "b"), infer=logical_binary, traits=(E, C), onnx="And",
                    doc="a and b")
logical_or = defop("logical_or", ("a", "b"), infer=logical_binary, traits=(E, C), onnx="Or",
                   doc="a or b")


def _not_rule(x: TensorType) -> TensorType:
    require(x, "input", kinds=("bool",))
    return x


logical_not = defop("logical_not", ("x",), infer=_not_rule, traits=(E,), onnx="Not",
                    doc="not x")


def _isnan_rule(x: TensorType) -> TensorType:
    require(x, "input", kinds=("float",))
    return x.with_dtype(bool_)


isnan = defop("isnan", ("x",), infer=_isnan_rule, traits=(E,), onnx="IsNaN", doc="x is NaN")


def _where_rule(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    require(cond, "condition", kinds=("bool",))
    t = broadcast_binary(a, b)
    return t.with_shape(broadcast_binary(cond.with_dtype(t.dtype), t).shape)


where = defop("where", ("cond", "a", "b"), infer=_where_rule, traits=(E, D), onnx="Where",
              doc="a where cond else b")
