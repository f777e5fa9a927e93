"""Symbolic tensors: :class:`Tensor` wraps an IR value and records ops as the user writes them.

Every operator and method adds a typed node to the active builder, so shapes and dtypes are
known at once and a mistake raises at the user's line with both shapes. Python scalars and
NumPy arrays mixed into an expression become constants of the tensor's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, dtype
from lbdl_graph.errors import DTypeError, LbdlError, OpError, ShapeError
from lbdl_graph.graph import Value
from lbdl_graph.shapes import Dim, is_static, normalize_axes, normalize_axis
from lbdl_graph.source import caller_location
from lbdl_graph.types import TensorType

from ._tensor_math import TensorMath

__all__ = ["MinMax", "Tensor", "as_tensor", "error", "reduced_count"]


class MinMax(NamedTuple):
    """``(values, indices)`` returned by ``x.max(dim)`` / ``x.min(dim)``, as in PyTorch."""

    values: Tensor
    indices: Tensor


def error(cls: type[LbdlError], message: str, *, hint: str | None = None) -> LbdlError:
    """A typed error that names the current layer (module scope) and the user's source line."""
    from lbdl_graph.builder import _active

    b = _active.get()
    node = (b.scope_name or None) if b is not None else None
    return cls(message, node=node, source=caller_location(), hint=hint)


def as_tensor(x: Any, dt: Any | None = None) -> Tensor:
    """A Tensor from a Tensor (cast to ``dt`` if given), a Python scalar or a NumPy array (a
    constant node)."""
    if isinstance(x, Tensor):
        return x if dt is None or x.dtype == dtype(dt) else x.to(dt)
    if isinstance(x, Value):
        return Tensor(x)
    arr = np.asarray(x)
    if dt is not None:
        target = dtype(dt)
        if target.is_integer and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise error(DTypeError, f"cannot use the non-integer constant {x!r} with a "
                        f"{target.name} tensor", hint="convert the tensor with .float() first")
        arr = arr.astype(target.numpy)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return Tensor(ops.constant(value=arr))


class Tensor(TensorMath):
    """A symbolic tensor: an IR :class:`~lbdl_graph.graph.Value` with PyTorch-style operators.

    Shapes are tuples of ints and symbolic names (``("N", 10)``).
    """

    __slots__ = ("_value",)
    __array_ufunc__ = None  # NumPy defers `array + tensor` to Tensor.__radd__

    def __init__(self, value: Value) -> None:
        if not isinstance(value, Value):
            raise OpError(f"Tensor wraps an IR Value, got {type(value).__name__}")
        self._value = value

    # ---- metadata ----
    @property
    def value(self) -> Value:
        """The IR value this tensor stands for."""
        return self._value

    @property
    def type(self) -> TensorType:
        """The static type (dtype and shape)."""
        return self.value.type

    @property
    def shape(self) -> tuple[Dim, ...]:
        """The shape: ints and symbolic dim names."""
        return tuple(self.value.type.shape)

    @property
    def dtype(self) -> DType:
        """The element type."""
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        """The rank."""
        return len(self.shape)

    @property
    def name(self) -> str:
        """The name of the IR value."""
        return self.value.name

    def dim(self) -> int:
        """The rank (PyTorch spelling)."""
        return self.ndim

    def size(self, i: int | None = None) -> Any:
        """The shape, or dim ``i`` of it."""
        return self.shape if i is None else self.shape[normalize_axis(i, self.ndim)]

    def __repr__(self) -> str:
        return f"Tensor(%{self.value.name}: {self.type})"

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        raise error(OpError, f"the truth value of symbolic {self.type} is unknown while tracing",
                    hint="use F.where / masked_fill instead of Python control flow on tensors")

    def __len__(self) -> int:
        d = self.shape[0] if self.shape else None
        if not isinstance(d, int):
            raise error(ShapeError, f"len() of {self.type} needs a static first dim")
        return d

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    def __array__(self, *_: Any, **__: Any) -> np.ndarray:
        raise error(OpError, f"{self.type} is symbolic and has no data while tracing",
                    hint="run the traced graph to get arrays")

    # ---- arithmetic ----
    def __add__(self, o: Any) -> Tensor:
        return T.binary(ops.add, self, o)

    def __radd__(self, o: Any) -> Tensor:
        return T.binary(ops.add, o, self)

    def __sub__(self, o: Any) -> Tensor:
        return T.binary(ops.sub, self, o)

    def __rsub__(self, o: Any) -> Tensor:
        return T.binary(ops.sub, o, self)

    def __mul__(self, o: Any) -> Tensor:
        return T.binary(ops.mul, self, o)

    def __rmul__(self, o: Any) -> Tensor:
        return T.binary(ops.mul, o, self)

    def __truediv__(self, o: Any) -> Tensor:
        return T.true_div(self, o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return T.true_div(o, self)

    def __floordiv__(self, o: Any) -> Tensor:
        return T.floor_div(self, o)

    def __rfloordiv__(self, o: Any) -> Tensor:
        return T.floor_div(o, self)

    def __mod__(self, o: Any) -> Tensor:
        a, b = T.operands(self, o)
        return a - T.floor_div(a, b) * b

    def __pow__(self, o: Any) -> Tensor:
        return T.binary(ops.pow_, self, o)

    def __rpow__(self, o: Any) -> Tensor:
        return T.binary(ops.pow_, o, self)

    def __matmul__(self, o: Any) -> Tensor:
        return T.binary(ops.matmul, self, o)

    def __rmatmul__(self, o: Any) -> Tensor:
        return T.binary(ops.matmul, o, self)

    def __neg__(self) -> Tensor:
        return T.unary(ops.neg, self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return T.unary(ops.abs_, self)

    def __invert__(self) -> Tensor:
        if not self.dtype.is_bool:
            raise error(DTypeError, f"~ needs a bool tensor, got {self.type}")
        return T.unary(ops.logical_not, self)

    def __and__(self, o: Any) -> Tensor:
        return T.logic(ops.logical_and, ops.bitwise_and, self, o)

    def __rand__(self, o: Any) -> Tensor:
        return T.logic(ops.logical_and, ops.bitwise_and, o, self)

    def __or__(self, o: Any) -> Tensor:
        return T.logic(ops.logical_or, ops.bitwise_or, self, o)

    def __ror__(self, o: Any) -> Tensor:
        return T.logic(ops.logical_or, ops.bitwise_or, o, self)

    def __xor__(self, o: Any) -> Tensor:
        return T.logic(None, ops.bitwise_xor, self, o)

    # ---- comparisons (bool results) ----
    def __lt__(self, o: Any) -> Tensor:
        return T.binary(ops.less, self, o)

    def __le__(self, o: Any) -> Tensor:
        return T.binary(ops.less_equal, self, o)

    def __gt__(self, o: Any) -> Tensor:
        return T.binary(ops.greater, self, o)

    def __ge__(self, o: Any) -> Tensor:
        return T.binary(ops.greater_equal, self, o)

    def __eq__(self, o: Any) -> Tensor:  # type: ignore[override]
        return T.binary(ops.equal, self, o)

    def __ne__(self, o: Any) -> Tensor:  # type: ignore[override]
        return T.unary(ops.logical_not, T.binary(ops.equal, self, o))

    # ---- indexing ----
    def __getitem__(self, index: Any) -> Tensor:
        return T.getitem(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        raise error(OpError, "tensors are immutable while tracing; item assignment is not "
                    "supported", hint="build the result with F.where, masked_fill or F.cat")

    # ---- shape methods ----
    def reshape(self, *shape: Any) -> Tensor:
        """Reshape; dims may be ints, -1 or symbolic names (a name equal to this tensor's dim at
        the same position is kept, one other unknown dim is inferred)."""
        target = T.shape_args(shape)
        return Tensor(ops.reshape(self.value, shape=T.reshape_target(self.shape, target)))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dims ``start_dim..end_dim`` into one."""
        return T.flatten(self, start_dim, end_dim)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two dims."""
        perm = list(range(self.ndim))
        a, b = normalize_axis(dim0, self.ndim), normalize_axis(dim1, self.ndim)
        perm[a], perm[b] = perm[b], perm[a]
        return Tensor(ops.transpose(self.value, perm=perm))

    def permute(self, *dims: Any) -> Tensor:
        """Reorder dims: ``x.permute(0, 2, 1)``."""
        return Tensor(ops.transpose(self.value, perm=T.shape_args(dims)))

    @property
    def T(self) -> Tensor:
        """All dims reversed."""
        return Tensor(ops.transpose(self.value, perm=list(range(self.ndim))[::-1]))

    @property
    def mT(self) -> Tensor:
        """The last two dims swapped (batched matrix transpose)."""
        return self.transpose(-2, -1)

    def unsqueeze(self, dim: int) -> Tensor:
        """Insert a size-1 dim at ``dim``."""
        return Tensor(ops.unsqueeze(self.value, axes=[normalize_axis(dim, self.ndim + 1)]))

    def squeeze(self, dim: int | Sequence[int] | None = None) -> Tensor:
        """Remove size-1 dims (only ``dim`` if given; a dim of another size is kept, as in
        PyTorch)."""
        if dim is None:
            return Tensor(ops.squeeze(self.value))
        axes = [a for a in normalize_axes(T.axes_of(dim), self.ndim) if self.shape[a] == 1]
        return Tensor(ops.squeeze(self.value, axes=axes)) if axes else self

    def expand(self, *sizes: Any) -> Tensor:
        """Broadcast to ``sizes`` (-1 keeps a dim)."""
        return T.expand(self, T.shape_args(sizes))

    def expand_as(self, other: Tensor) -> Tensor:
        """Broadcast to ``other``'s shape (works with symbolic dims)."""
        return Tensor(ops.broadcast_like(self.value, other.value))

    broadcast_to = expand

    def repeat(self, *repeats: Any) -> Tensor:
        """Tile the tensor ``repeats[i]`` times along dim i."""
        return Tensor(ops.tile(self.value, repeats=T.shape_args(repeats)))

    def chunk(self, chunks: int, dim: int = 0) -> list[Tensor]:
        """Split into ``chunks`` nearly equal pieces (static dim)."""
        return T.chunk(self, chunks, dim)

    def split(self, split_size: int | Sequence[int], dim: int = 0) -> list[Tensor]:
        """Split into pieces of ``split_size`` (an int or a list of sizes)."""
        return T.split(self, split_size, dim)

    def gather(self, dim: int, index: Tensor) -> Tensor:
        """``out[i][j] = self[index[i][j]][j]`` along ``dim`` (PyTorch ``gather``)."""
        return Tensor(ops.gather_elements(self.value, as_tensor(index).value, axis=dim))

    # ---- dtype methods ----
    def to(self, dt: Any) -> Tensor:
        """Convert to dtype ``dt`` (a name, DType or NumPy dtype)."""
        target = dtype(dt)
        return self if target == self.dtype else Tensor(ops.cast(self.value, to=target))

    def float(self) -> Tensor:
        """Convert to float32."""
        return self.to("float32")

    def double(self) -> Tensor:
        """Convert to float64."""
        return self.to("float64")

    def half(self) -> Tensor:
        """Convert to float16."""
        return self.to("float16")

    def long(self) -> Tensor:
        """Convert to int64."""
        return self.to("int64")

    def int(self) -> Tensor:
        """Convert to int32."""
        return self.to("int32")

    def bool(self) -> Tensor:
        """Convert to bool."""
        return self.to("bool")

    def type_as(self, other: Tensor) -> Tensor:
        """Convert to ``other``'s dtype."""
        return self.to(other.dtype)

    def detach(self) -> Tensor:
        """The same values with no gradient flowing back."""
        return Tensor(ops.stop_gradient(self.value))

    def contiguous(self) -> Tensor:
        """No-op (graphs have no memory layout)."""
        return self

    def clone(self) -> Tensor:
        """No-op (graph values are immutable)."""
        return self


def reduced_count(x: TensorMath, axes: Sequence[int]) -> int | Tensor:
    """How many elements each reduction over ``axes`` sees: an int for static dims, else a
    scalar tensor of x's dtype computed in the graph."""
    dims = [x.shape[a] for a in axes]
    if is_static(dims):
        return int(np.prod(dims, dtype=np.int64))
    ones = Tensor(ops.full_like(x.value, value=1.0))
    return ones.sum(list(axes)).reshape(-1)[0]


# The helpers need Tensor itself, so they are imported once it exists.
from . import _tensor_ops as T  # noqa: E402
