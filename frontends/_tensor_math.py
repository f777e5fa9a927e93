"""Math methods of :class:`~lbdl_graph.frontends.tensor.Tensor`: elementwise functions and
reductions, kept apart from the operators and shape methods to keep each file small."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lbdl_graph import ops
from lbdl_graph.errors import DTypeError
from lbdl_graph.shapes import normalize_axes

from . import tensor as _t

if TYPE_CHECKING:
    from lbdl_graph.dtypes import DType
    from lbdl_graph.graph import Value
    from lbdl_graph.shapes import Dim

    from .tensor import Tensor

__all__ = ["TensorMath"]


class TensorMath:
    """Elementwise math, masking, softmax and reductions (mixed into Tensor)."""

    __slots__ = ()
    if TYPE_CHECKING:  # what the methods use of Tensor, the class that mixes them in

        @property
        def value(self) -> Value: ...
        @property
        def shape(self) -> tuple[Dim, ...]: ...
        @property
        def dtype(self) -> DType: ...
        @property
        def ndim(self) -> int: ...
        def reshape(self, *shape: Any) -> Tensor: ...
        def __neg__(self) -> Tensor: ...
        def __mul__(self, o: Any) -> Tensor: ...
        def __invert__(self) -> Tensor: ...

    # ---- elementwise methods ----
    def add(self, o: Any) -> Tensor:
        """``self + o``."""
        return self + o

    def sub(self, o: Any) -> Tensor:
        """``self - o``."""
        return self - o

    def mul(self, o: Any) -> Tensor:
        """``self * o``."""
        return self * o

    def div(self, o: Any) -> Tensor:
        """``self / o``."""
        return self / o

    def pow(self, o: Any) -> Tensor:
        """``self ** o``."""
        return self**o

    def matmul(self, o: Any) -> Tensor:
        """``self @ o``."""
        return self @ o

    def abs(self) -> Tensor:
        """Absolute value."""
        return _t.T.unary(ops.abs_, self)

    def neg(self) -> Tensor:
        """``-self``."""
        return -self

    def exp(self) -> Tensor:
        """``e**x``."""
        return _t.T.unary(ops.exp, self)

    def log(self) -> Tensor:
        """Natural logarithm."""
        return _t.T.unary(ops.log, self)

    def sqrt(self) -> Tensor:
        """Square root."""
        return _t.T.unary(ops.sqrt, self)

    def rsqrt(self) -> Tensor:
        """``1 / sqrt(x)``."""
        return _t.T.unary(ops.reciprocal, _t.T.unary(ops.sqrt, self))

    def reciprocal(self) -> Tensor:
        """``1 / x``."""
        return _t.T.unary(ops.reciprocal, self)

    def square(self) -> Tensor:
        """``x * x``."""
        return self * self

    def sin(self) -> Tensor:
        """Sine."""
        return _t.T.unary(ops.sin, self)

    def cos(self) -> Tensor:
        """Cosine."""
        return _t.T.unary(ops.cos, self)

    def relu(self) -> Tensor:
        """``max(x, 0)``."""
        return _t.T.unary(ops.relu, self)

    def sigmoid(self) -> Tensor:
        """Logistic sigmoid."""
        return _t.T.unary(ops.sigmoid, self)

    def tanh(self) -> Tensor:
        """Hyperbolic tangent."""
        return _t.T.unary(ops.tanh, self)

    def floor(self) -> Tensor:
        """Round down."""
        return _t.T.unary(ops.floor, self)

    def ceil(self) -> Tensor:
        """Round up."""
        return _t.T.unary(ops.ceil, self)

    def sign(self) -> Tensor:
        """-1, 0 or 1."""
        return _t.T.unary(ops.sign, self)

    def isnan(self) -> Tensor:
        """Bool mask of NaN entries."""
        return _t.T.unary(ops.isnan, self)

    def logical_not(self) -> Tensor:
        """Boolean negation."""
        return ~self

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        """Clip to ``[min, max]`` (either side may be open)."""
        return _t.Tensor(ops.clip(self.value, min=min, max=max))

    clip = clamp

    def maximum(self, o: Any) -> Tensor:
        """Elementwise maximum."""
        return _t.T.binary(ops.maximum, self, o)

    def minimum(self, o: Any) -> Tensor:
        """Elementwise minimum."""
        return _t.T.binary(ops.minimum, self, o)

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        """``value`` where ``mask`` is True, else ``self``."""
        m = _t.as_tensor(mask, "bool") if not isinstance(mask, _t.Tensor) else mask
        if not m.dtype.is_bool:
            raise _t.error(DTypeError, f"masked_fill needs a bool mask, got {m.type}")
        return _t.Tensor(ops.where(m.value, _t.as_tensor(value, self.dtype).value, self.value))

    def where(self, cond: Any, other: Any) -> Tensor:
        """``self`` where ``cond`` else ``other`` (PyTorch ``Tensor.where``)."""
        return _t.T.where(cond, self, other)

    def softmax(self, dim: int = -1) -> Tensor:
        """Softmax along ``dim``."""
        return _t.Tensor(ops.softmax(self.value, axis=dim))

    def log_softmax(self, dim: int = -1) -> Tensor:
        """Log-softmax along ``dim``."""
        return _t.Tensor(ops.log_softmax(self.value, axis=dim))

    # ---- reductions ----
    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Sum over ``dim`` (all dims if None)."""
        return _t.T.reduce(ops.reduce_sum, self, dim, keepdim)

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Mean over ``dim`` (all dims if None)."""
        return _t.T.reduce(ops.reduce_mean, self, dim, keepdim)

    def prod(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Product over ``dim`` (all dims if None)."""
        return _t.T.reduce(ops.reduce_prod, self, dim, keepdim)

    def amax(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Max over ``dim`` (all dims if None)."""
        return _t.T.reduce(ops.reduce_max, self, dim, keepdim)

    def amin(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        """Min over ``dim`` (all dims if None)."""
        return _t.T.reduce(ops.reduce_min, self, dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        """The max of all entries; with ``dim`` a :class:`MinMax` ``(values, indices)`` as in
        PyTorch; with a tensor the elementwise maximum."""
        if dim is None:
            return self.amax()
        if isinstance(dim, _t.Tensor):
            return self.maximum(dim)
        return _t.MinMax(self.amax(dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        """The min of all entries; with ``dim`` a :class:`MinMax` ``(values, indices)``."""
        if dim is None:
            return self.amin()
        if isinstance(dim, _t.Tensor):
            return self.minimum(dim)
        return _t.MinMax(self.amin(dim, keepdim), self.argmin(dim, keepdim))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the max along ``dim`` (of the flattened tensor if None), int64."""
        x = self.reshape(-1) if dim is None else self
        return _t.Tensor(ops.argmax(x.value, axis=0 if dim is None else dim, keepdims=keepdim))

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the min along ``dim`` (of the flattened tensor if None), int64."""
        x = self.reshape(-1) if dim is None else self
        return _t.Tensor(ops.argmin(x.value, axis=0 if dim is None else dim, keepdims=keepdim))

    def var(self, dim: int | Sequence[int] | None = None, unbiased: bool = True,
            keepdim: bool = False) -> Tensor:
        """Variance over ``dim``; ``unbiased`` divides by n-1 as PyTorch does by default."""
        axes = normalize_axes(None if dim is None else _t.T.axes_of(dim), self.ndim)
        xc = self - self.mean(axes, keepdim=True)
        v = (xc * xc).mean(axes, keepdim=keepdim)
        if not unbiased:
            return v
        n = _t.reduced_count(self, axes)
        return v * (n / (n - 1)) if isinstance(n, int) else v * n / (n - 1.0)

    def std(self, dim: int | Sequence[int] | None = None, unbiased: bool = True,
            keepdim: bool = False) -> Tensor:
        """Standard deviation over ``dim``."""
        return self.var(dim, unbiased, keepdim).sqrt()

    def cumsum(self, dim: int) -> Tensor:
        """Cumulative sum along ``dim``."""
        return _t.Tensor(ops.cumsum(self.value, axis=dim))
