"""Samples of the elementwise ops; the oracle is ONNX's reference evaluator throughout.

Also home of the small input generators the other sample modules share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from onnx import helper

from lbdl_graph import ops
from lbdl_graph.dtypes import dtype
from tests.op_db import Arrays, OpSample

__all__ = ["SAMPLES", "bools", "fixed", "floats", "inputs", "ints", "onnx_type"]

Gen = Callable[[np.random.Generator], np.ndarray]


def floats(*shape: int, dt: str = "float32", lo: float = -2.0, hi: float = 2.0) -> Gen:
    """Uniform random floats in [lo, hi)."""
    return lambda rng: rng.uniform(lo, hi, shape).astype(dtype(dt).numpy)


def ints(*shape: int, dt: str = "int64", lo: int = -5, hi: int = 6) -> Gen:
    """Uniform random integers in [lo, hi)."""
    return lambda rng: rng.integers(lo, hi, shape).astype(dtype(dt).numpy)


def bools(*shape: int) -> Gen:
    """Random booleans."""
    return lambda rng: rng.random(shape) < 0.5


def fixed(value: Any, dt: str = "float32") -> Gen:
    """A fixed array (edge values: halves, NaN, ties)."""
    return lambda rng: np.asarray(value, dtype=dtype(dt).numpy)


def inputs(*gens: Gen) -> Callable[[np.random.Generator], Arrays]:
    """A ``make`` function drawing one array per generator."""
    return lambda rng: [g(rng) for g in gens]


def onnx_type(dt: str) -> int:
    """The ONNX TensorProto enum of one of our dtypes."""
    return helper.np_dtype_to_tensor_dtype(dtype(dt).numpy)


def _nonzero(*shape: int, dt: str = "int64") -> Gen:
    """Integers in [-5, 5] without 0 (divisors)."""
    def gen(rng: np.random.Generator) -> np.ndarray:
        v = rng.integers(1, 6, shape) * rng.choice([-1, 1], shape)
        return np.asarray(v).astype(dtype(dt).numpy)
    return gen


def _s(op: Any, onnx_op: str, *gens: Gen, label: str, **kw: Any) -> OpSample:
    return OpSample(op, inputs(*gens), label=label, onnx_op=onnx_op, **kw)


# ---- float unary math: (op, ONNX name, input range) ----
_UNARY: Sequence[tuple[Any, str, float, float]] = (
    (ops.exp, "Exp", -3.0, 3.0),
    (ops.log, "Log", 0.1, 4.0),
    (ops.sqrt, "Sqrt", 0.1, 4.0),
    (ops.reciprocal, "Reciprocal", 0.5, 3.0),
    (ops.sin, "Sin", -3.0, 3.0),
    (ops.cos, "Cos", -3.0, 3.0),
    (ops.tanh, "Tanh", -3.0, 3.0),
    (ops.sigmoid, "Sigmoid", -6.0, 6.0),
    (ops.relu, "Relu", -2.0, 2.0),
    (ops.erf, "Erf", -2.5, 2.5),
    (ops.softplus, "Softplus", -6.0, 6.0),
    (ops.floor, "Floor", -4.0, 4.0),
    (ops.ceil, "Ceil", -4.0, 4.0),
    (ops.round_, "Round", -4.0, 4.0),
    (ops.neg, "Neg", -3.0, 3.0),
    (ops.abs_, "Abs", -3.0, 3.0),
    (ops.sign, "Sign", -3.0, 3.0),
)
_KINKED = {"relu", "abs", "floor", "ceil", "round", "sign"}  # no finite-difference gradient

SAMPLES: list[OpSample] = []
for _op, _name, _lo, _hi in _UNARY:
    _grad = _op.name not in _KINKED
    SAMPLES += [
        _s(_op, _name, floats(3, 4, lo=_lo, hi=_hi), label="f32", grad=_grad),
        _s(_op, _name, floats(2, 1, 5, dt="float64", lo=_lo, hi=_hi), label="f64", grad=_grad),
        _s(_op, _name, floats(lo=_lo, hi=_hi), label="scalar", grad=_grad),
        _s(_op, _name, floats(0, 3, lo=_lo, hi=_hi), label="empty", grad=False),
        _s(_op, _name, floats(6, dt="float16", lo=_lo, hi=_hi), label="f16", rtol=2e-3,
           atol=2e-3, grad=False),
    ]

_HALVES = [-2.5, -1.5, -0.5, -0.0, 0.5, 1.5, 2.5, 0.49999997, -3.7, 3.2]
SAMPLES += [
    _s(ops.round_, "Round", fixed(_HALVES), label="half_to_even", grad=False),
    _s(ops.floor, "Floor", fixed(_HALVES, "float64"), label="halves", grad=False),
    _s(ops.ceil, "Ceil", fixed(_HALVES), label="halves", grad=False),
    _s(ops.sign, "Sign", fixed([-2.0, -0.0, 0.0, 3.0, np.nan]), label="zeros_nan", grad=False),
    _s(ops.neg, "Neg", ints(3, 4), label="i64"),
    _s(ops.neg, "Neg", ints(5, dt="int32"), label="i32"),
    _s(ops.abs_, "Abs", ints(3, 4), label="i64"),
    _s(ops.abs_, "Abs", ints(2, 2, dt="int32"), label="i32"),
    _s(ops.sign, "Sign", ints(3, 4, lo=-2, hi=3), label="i64"),
    _s(ops.sign, "Sign", ints(7, dt="int32", lo=-2, hi=3), label="i32"),
    _s(ops.relu, "Relu", fixed([-1.0, 0.0, 2.0, np.nan, -np.inf, np.inf]), label="special",
       grad=False),
    _s(ops.exp, "Exp", fixed([-np.inf, 0.0, 1.0, 100.0], "float32"), label="overflow",
       grad=False),
    _s(ops.sigmoid, "Sigmoid", fixed([-200.0, -30.0, 0.0, 30.0, 200.0]), label="saturate",
       grad=False),
    _s(ops.softplus, "Softplus", fixed([-200.0, -30.0, 0.0, 30.0, 80.0], "float64"),
       label="saturate", grad=False),
    _s(ops.leaky_relu, "LeakyRelu", floats(3, 4), label="default", grad=False),
    _s(ops.leaky_relu, "LeakyRelu", floats(2, 5, dt="float64"), label="alpha",
       attrs={"alpha": 0.2}, onnx_attrs={"alpha": 0.2}, grad=False),
    _s(ops.leaky_relu, "LeakyRelu", floats(0, 2), label="empty", grad=False),
    _s(ops.gelu, "Gelu", floats(3, 4, lo=-4, hi=4), label="none", onnx_opset=20),
    _s(ops.gelu, "Gelu", floats(2, 3, dt="float64", lo=-4, hi=4), label="none_f64",
       onnx_opset=20),
    _s(ops.gelu, "Gelu", floats(3, 4, lo=-4, hi=4), label="tanh",
       attrs={"approximate": "tanh"}, onnx_attrs={"approximate": "tanh"}, onnx_opset=20),
    _s(ops.gelu, "Gelu", floats(), label="tanh_scalar", attrs={"approximate": "tanh"},
       onnx_attrs={"approximate": "tanh"}, onnx_opset=20),
]

# all_reduce with no reducer bound: the group is this process alone, so the sum is x
SAMPLES += [
    _s(ops.all_reduce, "Identity", floats(3, 4), label="lone_f32"),
    _s(ops.all_reduce, "Identity", floats(5, dt="float64"), label="lone_f64",
       attrs={"group": "data"}),
]

for _op in (ops.identity, ops.stop_gradient):
    SAMPLES += [
        _s(_op, "Identity", floats(3, 4), label="f32"),
        _s(_op, "Identity", ints(2, 3), label="i64"),
        _s(_op, "Identity", bools(4), label="bool"),
        _s(_op, "Identity", floats(0, 2, dt="float64"), label="empty"),
    ]


def _clip_onnx(lo: float | None, hi: float | None) -> Callable[[Arrays], Arrays]:
    def conv(a: Arrays) -> Arrays:
        x = a[0]
        assert x is not None
        return [x, None if lo is None else np.asarray(lo, x.dtype),
                None if hi is None else np.asarray(hi, x.dtype)]
    return conv


_CLIPS: Sequence[tuple[str, Gen, float | None, float | None]] = (
    ("both", floats(3, 4), -1.0, 1.0),
    ("min_only", floats(2, 5, dt="float64"), -0.5, None),
    ("max_only", floats(4), None, 0.5),
    ("open", floats(2, 2), None, None),
    ("min_gt_max", floats(5), 1.0, -1.0),
    ("i64", ints(3, 4), -2.0, 3.0),
    ("i32", ints(6, dt="int32"), 0.0, 2.0),
    ("empty", floats(0, 3), -1.0, 1.0),
    ("scalar", floats(), -0.25, 0.25),
)
SAMPLES += [
    OpSample(ops.clip, inputs(g), attrs={"min": lo, "max": hi}, label=label, onnx_op="Clip",
             onnx_inputs=_clip_onnx(lo, hi), grad=False)
    for label, g, lo, hi in _CLIPS
]

_CASTS: Sequence[tuple[str, Gen, str]] = (
    ("f32_to_i32", floats(3, 4, lo=-5, hi=5), "int32"),
    ("f64_to_i64", floats(6, dt="float64", lo=-9, hi=9), "int64"),
    ("f64_to_f32", floats(2, 3, dt="float64"), "float32"),
    ("f32_to_f16", floats(5), "float16"),
    ("i64_to_f32", ints(3, 4), "float32"),
    ("i32_to_i64", ints(4, dt="int32"), "int64"),
    ("f32_to_bool", fixed([0.0, -0.0, 0.5, -2.0, np.inf]), "bool"),
    ("bool_to_f32", bools(2, 3), "float32"),
    ("i64_to_u8", ints(5, lo=0, hi=200), "uint8"),
    ("empty", floats(0, 4), "int64"),
    ("scalar", floats(lo=-3, hi=3), "int32"),
)
SAMPLES += [
    OpSample(ops.cast, inputs(g), attrs={"to": to}, label=label, onnx_op="Cast",
             onnx_attrs={"to": onnx_type(to)}, grad=dtype(to).is_float)
    for label, g, to in _CASTS
]


def _binary_samples(op: Any, onnx_op: str, *, lo: float = -2.0, hi: float = 2.0,
                    int_ok: bool = True, grad: bool = True) -> list[OpSample]:
    out = [
        _s(op, onnx_op, floats(3, 4, lo=lo, hi=hi), floats(3, 4, lo=lo, hi=hi), label="f32",
           grad=grad),
        _s(op, onnx_op, floats(2, 1, 3, dt="float64", lo=lo, hi=hi),
           floats(4, 1, dt="float64", lo=lo, hi=hi), label="broadcast_f64", grad=grad),
        _s(op, onnx_op, floats(lo=lo, hi=hi), floats(2, 3, lo=lo, hi=hi), label="scalar_lhs",
           grad=grad),
        _s(op, onnx_op, floats(3, 1, lo=lo, hi=hi), floats(1, lo=lo, hi=hi), label="size1",
           grad=grad),
        _s(op, onnx_op, floats(0, 3, lo=lo, hi=hi), floats(3, lo=lo, hi=hi), label="empty",
           grad=False),
    ]
    if int_ok:
        out += [
            _s(op, onnx_op, ints(3, 4), ints(4), label="i64"),
            _s(op, onnx_op, ints(2, 3, dt="int32"), ints(2, 1, dt="int32"), label="i32"),
        ]
    return out


SAMPLES += _binary_samples(ops.add, "Add")
SAMPLES += _binary_samples(ops.sub, "Sub")
SAMPLES += _binary_samples(ops.mul, "Mul")
SAMPLES += _binary_samples(ops.div, "Div", lo=0.5, hi=3.0, int_ok=False)
SAMPLES += _binary_samples(ops.pow_, "Pow", lo=0.5, hi=2.0, int_ok=False)
SAMPLES += _binary_samples(ops.maximum, "Max", grad=False)
SAMPLES += _binary_samples(ops.minimum, "Min", grad=False)
SAMPLES += [
    _s(ops.add, "Add", floats(4, dt="float16"), floats(4, dt="float16"), label="f16",
       rtol=1e-3, grad=False),
    _s(ops.add, "Add", ints(3, dt="uint8", lo=0, hi=200), ints(3, dt="uint8", lo=0, hi=200),
       label="u8_wraps"),
    _s(ops.div, "Div", floats(3, 4, lo=-3, hi=3), floats(4, lo=-3, hi=3), label="signed"),
    _s(ops.div, "Div", ints(3, 4, lo=-20, hi=21), _nonzero(3, 4), label="i64_truncates"),
    _s(ops.div, "Div", ints(2, 5, dt="int32", lo=-20, hi=21), _nonzero(5, dt="int32"),
       label="i32_truncates"),
    _s(ops.div, "Div", ints(4, dt="uint8", lo=0, hi=250), ints(4, dt="uint8", lo=1, hi=9),
       label="u8"),
    _s(ops.div, "Div", fixed([1.0, -1.0, 0.0]), fixed([0.0, 0.0, 0.0]), label="by_zero",
       grad=False),
    _s(ops.pow_, "Pow", ints(3, 4, lo=-4, hi=5), ints(3, 4, lo=0, hi=4), label="i64"),
    _s(ops.pow_, "Pow", ints(5, dt="int32", lo=-3, hi=4), ints(1, dt="int32", lo=0, hi=3),
       label="i32"),
    _s(ops.pow_, "Pow", floats(2, 3, lo=-2, hi=2), fixed([2.0, 3.0, 0.0]), label="neg_base",
       grad=False),
    _s(ops.maximum, "Max", fixed([1.0, np.nan, -1.0]), fixed([np.nan, 2.0, -3.0]),
       label="nan", grad=False),
    _s(ops.minimum, "Min", fixed([1.0, np.nan, -1.0]), fixed([np.nan, 2.0, -3.0]),
       label="nan", grad=False),
]

for _op, _name in ((ops.bitwise_and, "BitwiseAnd"), (ops.bitwise_or, "BitwiseOr"),
                   (ops.bitwise_xor, "BitwiseXor")):
    SAMPLES += [
        _s(_op, _name, ints(3, 4, lo=-100, hi=100), ints(3, 4, lo=-100, hi=100), label="i64"),
        _s(_op, _name, ints(2, 3, dt="int32", lo=0, hi=2**30), ints(3, dt="int32", lo=0,
                                                                    hi=2**30),
           label="i32_broadcast"),
        _s(_op, _name, ints(4, dt="uint8", lo=0, hi=256), ints(dt="uint8", lo=0, hi=256),
           label="u8_scalar"),
        _s(_op, _name, ints(0, 2), ints(2), label="empty"),
    ]

for _op, _name in ((ops.equal, "Equal"), (ops.less, "Less"), (ops.less_equal, "LessOrEqual"),
                   (ops.greater, "Greater"), (ops.greater_equal, "GreaterOrEqual")):
    SAMPLES += [
        _s(_op, _name, floats(3, 4), floats(4), label="f32"),
        _s(_op, _name, ints(2, 3, lo=0, hi=3), ints(2, 1, lo=0, hi=3), label="i64_ties"),
        _s(_op, _name, ints(4, dt="int32", lo=0, hi=3), ints(dt="int32", lo=0, hi=3),
           label="i32_scalar"),
        _s(_op, _name, fixed([1.0, np.nan, np.inf], "float64"),
           fixed([1.0, np.nan, -np.inf], "float64"), label="special"),
        _s(_op, _name, floats(0, 3), floats(1, 3), label="empty"),
    ]
SAMPLES.append(_s(ops.equal, "Equal", bools(3, 4), bools(4), label="bool"))

for _op, _name in ((ops.logical_and, "And"), (ops.logical_or, "Or")):
    SAMPLES += [
        _s(_op, _name, bools(3, 4), bools(3, 4), label="same"),
        _s(_op, _name, bools(2, 1, 3), bools(4, 1), label="broadcast"),
        _s(_op, _name, bools(), bools(0), label="empty"),
    ]
SAMPLES += [
    _s(ops.logical_not, "Not", bools(3, 4), label="2d"),
    _s(ops.logical_not, "Not", bools(), label="scalar"),
    _s(ops.logical_not, "Not", bools(0, 5), label="empty"),
    _s(ops.isnan, "IsNaN", fixed([0.0, np.nan, np.inf, -np.nan, 1.0]), label="f32"),
    _s(ops.isnan, "IsNaN", fixed([[np.nan, 2.0], [3.0, -np.inf]], "float64"), label="f64"),
    _s(ops.isnan, "IsNaN", floats(0), label="empty"),
    _s(ops.where, "Where", bools(3, 4), floats(3, 4), floats(3, 4), label="same"),
    _s(ops.where, "Where", bools(3, 1), floats(4, dt="float64"), floats(2, 1, 1, dt="float64"),
       label="broadcast3"),
    _s(ops.where, "Where", bools(), ints(2, 3), ints(3), label="i64_scalar_cond"),
    _s(ops.where, "Where", bools(0, 2), floats(2), floats(1), label="empty"),
]
