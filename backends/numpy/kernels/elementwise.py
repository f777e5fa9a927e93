"""NumPy kernels for lbdl_graph.ops.elementwise (ONNX semantics).

Every kernel returns an ``np.ndarray``: NumPy ufuncs turn 0-d results into scalars, so results go
through ``np.asarray``. Float math runs natively on float32/float64; the narrow floats (float16,
bfloat16, float8) are computed in float32 and rounded back, since SciPy and ml_dtypes lack loops
for some of them and NumPy computes float16 math in float32 anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
from scipy import special

from lbdl_graph import ops
from lbdl_graph.dtypes import DTYPES, DType
from lbdl_graph.errors import ExecutionError, OpError

from . import KERNELS

__all__ = ["float_math", "kind_of"]

_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# ml_dtypes types (bfloat16, int4, ...) all have NumPy kind "V", so ask our DType instead
_KINDS: dict[np.dtype[Any], str] = {d.numpy: d.kind for d in DTYPES.values()}
_NUMPY_KINDS = {"f": "float", "i": "int", "u": "uint", "b": "bool"}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

Array = np.ndarray


def kind_of(x: Array) -> str:
    """The element kind of an array: "float", "int", "uint" or "bool"."""
    kind = _KINDS.get(x.dtype)
    return kind if kind is not None else _NUMPY_KINDS.get(x.dtype.kind, "other")


def float_math(fn: Callable[[Array], Any], x: Array) -> Array:
    """Apply ``fn`` to a float array, computing narrow float types in float32."""
    if x.dtype in _NATIVE_FLOATS:
        return np.asarray(fn(x))
    return np.asarray(fn(x.astype(np.float32))).astype(x.dtype)


def _unary(fn: Callable[[Array], Any], name: str) -> Callable[[Array], Array]:
    def kernel(x: Array) -> Array:
        return float_math(fn, x)

    kernel.__name__ = kernel.__qualname__ = f"_{name}_kernel"
    kernel.__doc__ = f"{name}(x) via {getattr(fn, '__name__', fn)}."
    return kernel


def _gelu_none(x: Array) -> Array:
    return 0.5 * x * (1.0 + special.erf(x * (1.0 / math.sqrt(2.0))))


def _gelu_tanh(x: Array) -> Array:
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


def _relu(x: Array) -> Array:
    return np.maximum(x, x.dtype.type(0))


def _softplus(x: Array) -> Array:
    return np.logaddexp(x, x.dtype.type(0))  # log(1 + e**x) without overflow


# Float-only unary math: (op, function).
_FLOAT_UNARY: tuple[tuple[Any, Callable[[Array], Any]], ...] = (
    (ops.exp, np.exp),
    (ops.log, np.log),
    (ops.sqrt, np.sqrt),
    (ops.reciprocal, np.reciprocal),
    (ops.sin, np.sin),
    (ops.cos, np.cos),
    (ops.tanh, np.tanh),
    (ops.sigmoid, special.expit),  # stable for large |x|, unlike 1/(1+exp(-x))
    (ops.relu, _relu),
    (ops.erf, special.erf),
    (ops.softplus, _softplus),
    (ops.floor, np.floor),
    (ops.ceil, np.ceil),
    (ops.round_, np.rint),  # rint rounds half to even, as ONNX Round does
)
for _op, _fn in _FLOAT_UNARY:
    KERNELS.register(_op)(_unary(_fn, _op.name))


@KERNELS.register(ops.neg)
def _neg_kernel(x: Array) -> Array:
    """-x (floats and signed integers)."""
    return np.asarray(np.negative(x))


@KERNELS.register(ops.abs_)
def _abs_kernel(x: Array) -> Array:
    """|x| (floats and signed integers)."""
    return np.asarray(np.abs(x))


@KERNELS.register(ops.sign)
def _sign_kernel(x: Array) -> Array:
    """-1, 0 or 1 in x's dtype (NaN stays NaN)."""
    if kind_of(x) != "float":
        return np.asarray(np.sign(x))
    return float_math(np.sign, x)


@KERNELS.register(ops.leaky_relu)
def _leaky_relu_kernel(x: Array, *, alpha: float) -> Array:
    """x where x >= 0, else alpha * x."""
    return float_math(lambda v: np.where(v >= 0, v, v * v.dtype.type(alpha)), x)


@KERNELS.register(ops.gelu)
def _gelu_kernel(x: Array, *, approximate: str) -> Array:
    """x * Phi(x); ``approximate='tanh'`` uses the tanh formula (ONNX Gelu-20)."""
    if approximate == "none":
        return float_math(_gelu_none, x)
    if approximate == "tanh":
        return float_math(_gelu_tanh, x)
    raise OpError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@KERNELS.register(ops.identity, ops.stop_gradient)
def _identity_kernel(x: Array) -> Array:
    """x unchanged (values are never mutated in place, so no copy is needed)."""
    return x


def _clip_bound(v: float | None, x: Array) -> Array | None:
    """A clip bound converted to x's dtype, as ONNX Clip takes it (integers saturate)."""
    if v is None:
        return None
    if kind_of(x) in ("int", "uint"):
        if math.isnan(v):
            raise OpError(f"clip: bound {v} is not valid for an integer input ({x.dtype})")
        info = ml_dtypes.iinfo(x.dtype)
        return np.asarray(int(min(max(v, info.min), info.max)), dtype=x.dtype)
    return np.asarray(v, dtype=x.dtype)


@KERNELS.register(ops.clip)
def _clip_kernel(x: Array, *, min: float | None, max: float | None) -> Array:
    """min(max(x, min), max); if min > max every element becomes max (ONNX)."""
    lo, hi = _clip_bound(min, x), _clip_bound(max, x)
    if lo is None:
        return x if hi is None else np.asarray(np.minimum(x, hi))
    if hi is None:
        return np.asarray(np.maximum(x, lo))
    return np.asarray(np.minimum(np.maximum(x, lo), hi))


@KERNELS.register(ops.cast)
def _cast_kernel(x: Array, *, to: DType) -> Array:
    """Convert to ``to``; float to integer truncates toward zero."""
    return np.asarray(x.astype(to.numpy))


# Binary ops whose NumPy ufunc already has ONNX semantics: (op, ufunc).
_BINARY: tuple[tuple[Any, Callable[[Array, Array], Any]], ...] = (
    (ops.add, np.add),
    (ops.sub, np.subtract),
    (ops.mul, np.multiply),
    (ops.maximum, np.maximum),  # both propagate NaN, like ONNX Max/Min
    (ops.minimum, np.minimum),
    (ops.bitwise_and, np.bitwise_and),
    (ops.bitwise_or, np.bitwise_or),
    (ops.bitwise_xor, np.bitwise_xor),
    (ops.equal, np.equal),
    (ops.less, np.less),
    (ops.less_equal, np.less_equal),
    (ops.greater, np.greater),
    (ops.greater_equal, np.greater_equal),
    (ops.logical_and, np.logical_and),
    (ops.logical_or, np.logical_or),
)


def _binary(fn: Callable[[Array, Array], Any], name: str) -> Callable[[Array, Array], Array]:
    def kernel(a: Array, b: Array) -> Array:
        return np.asarray(fn(a, b))

    kernel.__name__ = kernel.__qualname__ = f"_{name}_kernel"
    kernel.__doc__ = f"{name}(a, b) via numpy.{getattr(fn, '__name__', fn)}."
    return kernel


for _op, _fn2 in _BINARY:
    KERNELS.register(_op)(_binary(_fn2, _op.name))


@KERNELS.register(ops.div)
def _div_kernel(a: Array, b: Array) -> Array:
    """a / b; integer division truncates toward zero (ONNX Div), unlike NumPy's floor."""
    kind = kind_of(a)
    if kind == "float":
        return np.asarray(np.divide(a, b))
    if not b.all():
        raise ExecutionError(f"div: integer division by zero ({a.dtype})")
    q = np.floor_divide(a, b)
    if kind == "int":
        # floor and truncation differ when the remainder is non-zero and the signs differ
        q = q + ((q * b != a) & ((a < 0) != (b < 0)))
    return np.asarray(q)


@KERNELS.register(ops.pow_)
def _pow_kernel(a: Array, b: Array) -> Array:
    """a ** b; integer exponents must be non-negative."""
    if kind_of(b) == "int" and (b < 0).any():
        raise ExecutionError(f"pow: negative exponent for integer input ({b.dtype})")
    if kind_of(a) != "float":
        return np.asarray(np.power(a, b))
    return float_math(lambda v: np.power(v, b.astype(v.dtype)), a)


@KERNELS.register(ops.logical_not)
def _logical_not_kernel(x: Array) -> Array:
    """not x."""
    return np.asarray(np.logical_not(x))


@KERNELS.register(ops.isnan)
def _isnan_kernel(x: Array) -> Array:
    """True where x is NaN."""
    return np.asarray(np.isnan(x if x.dtype in _NATIVE_FLOATS else x.astype(np.float32)))


@KERNELS.register(ops.where)
def _where_kernel(cond: Array, a: Array, b: Array) -> Array:
    """a where cond else b (all three broadcast)."""
    return np.asarray(np.where(cond, a, b))
