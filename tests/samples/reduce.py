"""Samples of the reductions, arg-reductions, softmax and cumsum (ONNX reference oracle).

ONNX 18+ takes reduction axes as an input tensor; ``axes=()`` maps to
``noop_with_empty_axes=1`` and ``axes=None`` to no axes input (reduce everything).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import special

from lbdl_graph import ops
from tests.op_db import Arrays, OpSample
from tests.samples.elementwise import Gen, bools, fixed, floats, inputs, ints

__all__ = ["SAMPLES"]


def _axes_input(axes: tuple[int, ...] | None) -> Callable[[Arrays], Arrays]:
    def conv(a: Arrays) -> Arrays:
        return a if not axes else [*a, np.asarray(axes, dtype=np.int64)]
    return conv


def _reduce(op: Any, onnx_op: str, g: Gen, axes: tuple[int, ...] | None, keepdims: bool,
            label: str, **kw: Any) -> OpSample:
    return OpSample(
        op, inputs(g), attrs={"axes": axes, "keepdims": keepdims}, label=label,
        onnx_op=onnx_op, onnx_inputs=_axes_input(axes),
        onnx_attrs={"keepdims": int(keepdims), "noop_with_empty_axes": int(axes == ())}, **kw)


# (label, input, axes, keepdims, differentiable)
_CASES: Sequence[tuple[str, Gen, tuple[int, ...] | None, bool, bool]] = (
    ("all", floats(3, 4), None, True, True),
    ("all_flat", floats(2, 3, 2, dt="float64"), None, False, True),
    ("axis1", floats(3, 4), (1,), True, True),
    ("neg_axis", floats(2, 3, 4, dt="float64"), (-1,), False, True),
    ("two_axes", floats(2, 3, 4), (0, 2), False, True),
    ("neg_two_axes", floats(2, 3, 4), (-3, -2), True, True),
    ("noop", floats(3, 2), (), True, True),
    ("scalar", floats(), None, False, True),
    ("size1", floats(1, 4, 1), (0, 2), False, True),
    ("empty_kept", floats(0, 3), (1,), True, False),
    ("empty_reduced", floats(0, 3), (0,), False, False),
    ("i64", ints(3, 4), (1,), False, False),
    ("i32_all", ints(2, 5, dt="int32"), None, True, False),
)

SAMPLES: list[OpSample] = []
for _op, _name in ((ops.reduce_sum, "ReduceSum"), (ops.reduce_mean, "ReduceMean"),
                   (ops.reduce_max, "ReduceMax"), (ops.reduce_min, "ReduceMin"),
                   (ops.reduce_prod, "ReduceProd")):
    grad_ok = _op not in (ops.reduce_max, ops.reduce_min)  # ties break finite differences
    SAMPLES += [_reduce(_op, _name, g, axes, kd, label, grad=grad and grad_ok)
                for label, g, axes, kd, grad in _CASES]
SAMPLES += [
    _reduce(ops.reduce_mean, "ReduceMean", ints(2, 3, lo=-7, hi=8), (1,), False,
            "i64_truncates", grad=False),
    _reduce(ops.reduce_prod, "ReduceProd", floats(3, 4, lo=0.5, hi=1.5), (0,), True,
            "near_one"),
    _reduce(ops.reduce_max, "ReduceMax", fixed([[1.0, np.nan], [2.0, 3.0]]), (1,), False,
            "nan", grad=False),
    _reduce(ops.reduce_min, "ReduceMin", fixed([[1.0, np.nan], [2.0, 3.0]]), (1,), False,
            "nan", grad=False),
    _reduce(ops.reduce_max, "ReduceMax", bools(3, 4), (1,), False, "bool", grad=False),
    _reduce(ops.reduce_min, "ReduceMin", bools(3, 4), None, True, "bool", grad=False),
    _reduce(ops.reduce_max, "ReduceMax", ints(0, 3), (0,), True, "empty_i64", grad=False),
    _reduce(ops.reduce_min, "ReduceMin", ints(0, 3, dt="int32"), (0,), False, "empty_i32",
            grad=False),
    _reduce(ops.reduce_sum, "ReduceSum", ints(4, 5, dt="uint8", lo=0, hi=255), None, False,
            "u8_wraps", grad=False),
]

for _op, _name in ((ops.argmax, "ArgMax"), (ops.argmin, "ArgMin")):
    SAMPLES += [
        OpSample(_op, inputs(g), attrs={"axis": axis, "keepdims": kd}, label=label,
                 onnx_op=_name, onnx_attrs={"axis": axis, "keepdims": int(kd)})
        for label, g, axis, kd in (
            ("default", floats(3, 4), 0, True),
            ("last_axis", floats(2, 3, 4, dt="float64"), -1, False),
            ("middle", floats(2, 3, 4), 1, True),
            ("ties_first", ints(4, 6, lo=0, hi=2), 1, False),
            ("i32", ints(5, dt="int32"), 0, False),
            ("size1", floats(1, 3), 0, False),
            ("empty_other", floats(0, 3), 1, True),
        )
    ]

for _op, _name in ((ops.softmax, "Softmax"), (ops.log_softmax, "LogSoftmax")):
    SAMPLES += [
        OpSample(_op, inputs(g), attrs=attrs, label=label, onnx_op=_name, onnx_attrs=attrs)
        for label, g, attrs in (
            ("default", floats(3, 4), {}),
            ("axis0", floats(3, 4, dt="float64"), {"axis": 0}),
            ("middle", floats(2, 3, 4), {"axis": 1}),
            ("neg_axis", floats(2, 3, 4), {"axis": -2}),
            ("large", floats(2, 5, lo=-30.0, hi=30.0), {"axis": -1}),
            ("size1", floats(4, 1), {"axis": 1}),
            ("vector", floats(6, dt="float64"), {"axis": 0}),
            ("empty_rows", floats(0, 3), {"axis": -1}),
        )
    ]


def _log_softmax_f64(x: np.ndarray, *, axis: int) -> np.ndarray:
    """log_softmax in float64 via SciPy's logsumexp: ONNX's reference computes log(softmax(x))
    and underflows to -inf where the true value is about -160."""
    v = x.astype(np.float64)
    return (v - special.logsumexp(v, axis=axis, keepdims=True)).astype(x.dtype)


SAMPLES.append(OpSample(ops.log_softmax, inputs(floats(2, 5, lo=-80.0, hi=80.0)),
                        attrs={"axis": -1}, label="large_no_underflow",
                        reference=_log_softmax_f64))


def _cumsum_onnx(axis: int) -> Callable[[Arrays], Arrays]:
    return lambda a: [*a, np.asarray(axis, dtype=np.int64)]


SAMPLES += [
    OpSample(ops.cumsum, inputs(g), attrs={"axis": axis, "exclusive": ex, "reverse": rev},
             label=label, onnx_op="CumSum", onnx_inputs=_cumsum_onnx(axis),
             onnx_attrs={"exclusive": int(ex), "reverse": int(rev)})
    for label, g, axis, ex, rev in (
        ("default", floats(3, 4), 0, False, False),
        ("last_axis", floats(2, 3, 4, dt="float64"), -1, False, False),
        ("exclusive", floats(3, 4), 1, True, False),
        ("reverse", floats(3, 4), 1, False, True),
        ("exclusive_reverse", floats(2, 5, dt="float64"), -1, True, True),
        ("i64", ints(3, 4), 1, False, False),
        ("i32_exclusive", ints(6, dt="int32"), 0, True, False),
        ("size1", floats(1, 3), 0, True, True),
        ("empty_axis", floats(0, 3), 0, True, False),
        ("empty_other", floats(0, 3), 1, False, True),
    )
]


def _kth_largest_ref(k: int) -> Callable[..., Any]:
    def ref(x: np.ndarray, **_: Any) -> np.ndarray:
        return np.asarray(np.sort(x.ravel())[::-1][k - 1] if k else np.inf, dtype=x.dtype)
    return ref


SAMPLES += [
    OpSample(ops.kth_largest, inputs(g), attrs={"k": k}, label=label, reference=_kth_largest_ref(k))
    for label, g, k in (
        ("first", floats(3, 4), 1),
        ("middle", floats(2, 3, 4, dt="float64"), 7),
        ("last", floats(5), 5),
        ("none", floats(3, 2), 0),
        ("ties", fixed([1.0, 3.0, 3.0, 2.0]), 2),
    )
]


def _k_input(k: int) -> Callable[[Arrays], Arrays]:
    def conv(a: Arrays) -> Arrays:
        return [*a, np.asarray([k], dtype=np.int64)]
    return conv


SAMPLES += [
    OpSample(ops.top_k, inputs(g), attrs={"k": k, "axis": axis, "largest": largest},
             label=label, onnx_op="TopK",
             onnx_attrs={"axis": axis, "largest": int(largest), "sorted": 1},
             onnx_inputs=_k_input(k), grad="ties" not in label)
    for label, g, k, axis, largest in (
        ("last_axis", floats(3, 7), 3, -1, True),
        ("first_axis_smallest", floats(6, 4), 2, 0, False),
        ("all_of_axis", floats(2, 5, dt="float64"), 5, 1, True),
        ("zero", floats(3, 4), 0, 1, True),
        ("ties", fixed([[1.0, 3.0, 3.0, 2.0, 3.0]]), 3, 1, True),
        ("ties_smallest", fixed([[2.0, 1.0, 2.0, 1.0]]), 3, 1, False),
        ("ints", ints(4, 6), 2, 1, True),
    )
]
