"""Element types of tensors: one :class:`DType` per supported type, convertible to NumPy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from .errors import DTypeError

__all__ = [
    "DTYPES",
    "DType",
    "bfloat16",
    "bool_",
    "dtype",
    "float8_e4m3fn",
    "float16",
    "float32",
    "float64",
    "int4",
    "int8",
    "int32",
    "int64",
    "uint4",
    "uint8",
]


@dataclass(frozen=True, slots=True)
class DType:
    """A tensor element type: its long name, short printed name and NumPy dtype."""

    name: str
    short: str
    kind: str  # "float", "int", "uint" or "bool"
    bits: int
    numpy: np.dtype[Any]

    @property
    def is_float(self) -> bool:
        """True for floating-point types (differentiable values)."""
        return self.kind == "float"

    @property
    def is_integer(self) -> bool:
        """True for signed or unsigned integer types."""
        return self.kind in ("int", "uint")

    @property
    def is_bool(self) -> bool:
        """True for the boolean type."""
        return self.kind == "bool"

    @property
    def itemsize(self) -> float:
        """Bytes per element (0.5 for the 4-bit types)."""
        return self.bits / 8

    def __repr__(self) -> str:
        return self.short


float32 = DType("float32", "f32", "float", 32, np.dtype(np.float32))
float64 = DType("float64", "f64", "float", 64, np.dtype(np.float64))
float16 = DType("float16", "f16", "float", 16, np.dtype(np.float16))
bfloat16 = DType("bfloat16", "bf16", "float", 16, np.dtype(ml_dtypes.bfloat16))
float8_e4m3fn = DType("float8_e4m3fn", "f8e4m3", "float", 8, np.dtype(ml_dtypes.float8_e4m3fn))
int64 = DType("int64", "i64", "int", 64, np.dtype(np.int64))
int32 = DType("int32", "i32", "int", 32, np.dtype(np.int32))
int8 = DType("int8", "i8", "int", 8, np.dtype(np.int8))
uint8 = DType("uint8", "u8", "uint", 8, np.dtype(np.uint8))
int4 = DType("int4", "i4", "int", 4, np.dtype(ml_dtypes.int4))
uint4 = DType("uint4", "u4", "uint", 4, np.dtype(ml_dtypes.uint4))
bool_ = DType("bool", "bool", "bool", 8, np.dtype(np.bool_))

DTYPES: dict[str, DType] = {
    d.name: d
    for d in (float32, float64, float16, bfloat16, float8_e4m3fn, int64, int32, int8, uint8,
              int4, uint4, bool_)
}
_LOOKUP: dict[Any, DType] = {}
for _d in DTYPES.values():
    _LOOKUP[_d.name] = _d
    _LOOKUP[_d.short] = _d
    _LOOKUP[_d.numpy] = _d


def dtype(x: Any) -> DType:
    """Convert a DType, a name ('float32', 'f32'), a NumPy dtype or an array to a DType."""
    if isinstance(x, DType):
        return x
    if isinstance(x, np.ndarray | np.generic):
        x = x.dtype
    if x in (bool, "bool_"):
        return bool_
    if x is float:
        return float32
    if x is int:
        return int64
    try:
        key = x if isinstance(x, str) else np.dtype(x)
        return _LOOKUP[key]
    except (KeyError, TypeError):
        raise DTypeError(
            f"unsupported dtype {x!r}; supported: {', '.join(DTYPES)}"
        ) from None
