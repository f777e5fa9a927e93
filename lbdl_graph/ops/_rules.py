"""Shape/dtype rules shared by several op declarations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..dtypes import DType, bool_, int64
from ..errors import DTypeError, ShapeError
from ..shapes import Dim, broadcast_shapes, fmt_shape, normalize_axes, normalize_axis
from ..types import TensorType

__all__ = [
    "broadcast_binary",
    "compare",
    "float_unary",
    "reduce_rule",
    "require",
    "same_dtype",
    "same_type",
]


def require(t: TensorType, what: str, *, kinds: Sequence[str]) -> None:
    """Raise DTypeError unless ``t``'s dtype kind is one of ``kinds``."""
    if t.dtype.kind not in kinds:
        raise DTypeError(f"{what} must be {' or '.join(kinds)}, got {t}")


def same_dtype(*types: TensorType | None) -> DType:
    """The common dtype of the operands; raise DTypeError if they differ."""
    dts = [t.dtype for t in types if t is not None]
    if len(set(dts)) > 1:
        raise DTypeError("operand dtypes differ: " + ", ".join(str(t) for t in types if t))
    return dts[0]


def same_type(x: TensorType, **_: Any) -> TensorType:
    """Output has the input's type (identity-like ops)."""
    return x


def float_unary(x: TensorType, **_: Any) -> TensorType:
    """Float in, same type out."""
    require(x, "input", kinds=("float",))
    return x


def numeric_unary(x: TensorType, **_: Any) -> TensorType:
    """Any numeric type in, same type out."""
    require(x, "input", kinds=("float", "int"))
    return x


def broadcast_binary(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    """Same dtype, broadcast shapes."""
    return TensorType(same_dtype(a, b), broadcast_shapes(a.shape, b.shape))


def numeric_binary(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    """Numeric operands of one dtype, broadcast shapes."""
    require(a, "input", kinds=("float", "int", "uint"))
    return broadcast_binary(a, b)


def integer_binary(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    """Integer operands of one dtype, broadcast shapes (bitwise ops)."""
    require(a, "input", kinds=("int", "uint"))
    return broadcast_binary(a, b)


def compare(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    """Same dtype, broadcast shapes, bool out."""
    same_dtype(a, b)
    return TensorType(bool_, broadcast_shapes(a.shape, b.shape))


def logical_binary(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    """Bool operands, broadcast shapes."""
    require(a, "input", kinds=("bool",))
    require(b, "input", kinds=("bool",))
    return TensorType(bool_, broadcast_shapes(a.shape, b.shape))


def reduce_rule(x: TensorType, *, axes: tuple[int, ...] | None, keepdims: bool,
                **_: Any) -> TensorType:
    """Reduce over ``axes`` (None: all axes; (): none)."""
    ax = normalize_axes(axes, x.ndim)
    shape = [1 if i in ax else d for i, d in enumerate(x.shape) if keepdims or i not in ax]
    return x.with_shape(shape)


def arg_reduce_rule(x: TensorType, *, axis: int, keepdims: bool, **_: Any) -> TensorType:
    """Index of the max/min along one axis, int64."""
    a = normalize_axis(axis, x.ndim)
    shape = [1 if i == a else d for i, d in enumerate(x.shape) if keepdims or i != a]
    return TensorType(int64, tuple(shape))


def check_same_shape(a: TensorType, b: TensorType, what: str) -> None:
    """Raise ShapeError unless the two shapes are equal."""
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"{what}: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} differ")


def dim_eq(a: Dim, b: Dim) -> bool:
    """Dims that are provably equal (same int or same symbol)."""
    return a == b
