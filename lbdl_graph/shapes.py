"""Shapes whose dims are ints or symbolic names ("N", "T") and the rules ops share.

A symbolic dim is a string. Rules that compute a new dim from a symbolic one (a convolution's
output length, a concatenated axis) produce a deterministic string expression such as
``"(H-3)//2+1"`` so that the same graph always gets the same types.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

from .errors import ShapeError

__all__ = [
    "Dim",
    "Shape",
    "add_dims",
    "broadcast_shapes",
    "conv_out_dim",
    "conv_transpose_out_dim",
    "eval_dim",
    "fmt_shape",
    "is_static",
    "normalize_axes",
    "normalize_axis",
    "numel",
    "reshape_shape",
    "shape_of",
]

Dim = int | str
Shape = tuple[Dim, ...]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def shape_of(dims: Sequence[Dim]) -> Shape:
    """Validate and normalise a shape: non-negative ints or non-empty strings."""
    out: list[Dim] = []
    for d in dims:
        if isinstance(d, bool):
            raise ShapeError(f"invalid dim {d!r} in shape {tuple(dims)}")
        if isinstance(d, int | str):
            if isinstance(d, int) and d < 0:
                raise ShapeError(f"negative dim {d} in shape {tuple(dims)}")
            if isinstance(d, str) and not d:
                raise ShapeError(f"empty symbolic dim in shape {tuple(dims)}")
            out.append(d)
        elif hasattr(d, "__index__"):
            out.append(int(d))
        else:
            raise ShapeError(f"invalid dim {d!r} in shape {tuple(dims)}")
    return tuple(out)


def fmt_shape(shape: Sequence[Dim]) -> str:
    """Format a shape as ``[N,3,32,32]``."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def is_static(shape: Sequence[Dim]) -> TypeGuard[Sequence[int]]:
    """True if every dim is a concrete int."""
    return all(isinstance(d, int) for d in shape)


def numel(shape: Sequence[Dim]) -> int | None:
    """Number of elements, or None if a dim is symbolic."""
    return math.prod(shape) if is_static(shape) else None


def normalize_axis(axis: int, ndim: int) -> int:
    """Map a possibly negative axis into [0, ndim); raise ShapeError if out of range."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of range for a tensor of rank {ndim}")
    return axis % ndim if ndim else 0


def normalize_axes(axes: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Normalise a list of axes (None means all), sorted and without duplicates."""
    if axes is None:
        return tuple(range(ndim))
    out = sorted({normalize_axis(a, ndim) for a in axes})
    if len(out) != len(axes):
        raise ShapeError(f"duplicate axes {tuple(axes)}")
    return tuple(out)


def broadcast_shapes(*shapes: Sequence[Dim]) -> Shape:
    """NumPy/ONNX multidirectional broadcasting over symbolic shapes."""
    ndim = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(ndim):
        dims = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(
                "shapes " + " and ".join(fmt_shape(s) for s in shapes) + " cannot be broadcast"
                f" (dim {i - ndim}: {' vs '.join(str(d) for d in sorted(dims, key=str))})"
            )
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _term(d: Dim) -> str:
    return d if isinstance(d, str) and _NAME.match(d) else f"({d})"


def add_dims(dims: Sequence[Dim]) -> Dim:
    """Sum of dims (concatenation); symbolic parts are kept as an expression."""
    const = sum(d for d in dims if isinstance(d, int))
    syms = [_term(d) for d in dims if isinstance(d, str)]
    if not syms:
        return const
    return "+".join(syms) + (f"+{const}" if const else "")


def affine_dim(d: Dim, offset: int, stride: int = 1) -> Dim:
    """``(d + offset) // stride + 1`` for ints; a string expression for symbolic d."""
    if isinstance(d, int):
        out = (d + offset) // stride + 1
        if out < 0:
            raise ShapeError(f"dim {d} is too small (would give {out})")
        return out
    if stride == 1:
        c = offset + 1
        return d if c == 0 else f"{_term(d)}{c:+d}"
    inner = _term(d) if offset == 0 else f"({_term(d)}{offset:+d})"
    return f"{inner}//{stride}+1"


def conv_out_dim(d: Dim, kernel: int, stride: int, pad_total: int, dilation: int) -> Dim:
    """Output length of a convolution or pooling window along one axis (floor mode)."""
    eff = dilation * (kernel - 1) + 1
    if isinstance(d, int) and d + pad_total < eff:
        raise ShapeError(
            f"input length {d} (+{pad_total} padding) is smaller than the window {eff}"
        )
    return affine_dim(d, pad_total - eff, stride)


def conv_transpose_out_dim(
    d: Dim, kernel: int, stride: int, pad_total: int, dilation: int, output_padding: int
) -> Dim:
    """Output length of a transposed convolution along one axis (ONNX formula)."""
    extra = dilation * (kernel - 1) + 1 + output_padding - pad_total
    if isinstance(d, int):
        return stride * (d - 1) + extra
    base = _term(d) if stride == 1 else f"{stride}*{_term(d)}"
    c = extra - stride
    return base if c == 0 else f"{base}{c:+d}"


def reshape_shape(src: Sequence[Dim], target: Sequence[int]) -> Shape:
    """ONNX Reshape (allowzero=0): 0 copies the input dim, one -1 is inferred."""
    out: list[Dim | None] = []
    for i, t in enumerate(target):
        if t == 0:
            if i >= len(src):
                raise ShapeError(f"reshape target {tuple(target)}: 0 at axis {i} has no input dim")
            out.append(src[i])
        elif t == -1:
            out.append(None)
        elif t > 0:
            out.append(t)
        else:
            raise ShapeError(f"invalid reshape target {tuple(target)}")
    if out.count(None) > 1:
        raise ShapeError(f"reshape target {tuple(target)} has more than one -1")
    src_const, src_syms = _factor(src)
    dst_const, dst_syms = _factor([d for d in out if d is not None])
    remaining = list(src_syms)
    for s in dst_syms:
        if s in remaining:
            remaining.remove(s)
        else:
            raise ShapeError(f"cannot reshape {fmt_shape(src)} to {tuple(target)}")
    if None in out:
        if dst_const == 0 or src_const % dst_const:
            raise ShapeError(f"cannot reshape {fmt_shape(src)} to {tuple(target)}")
        rest = src_const // dst_const
        inferred: Dim = rest if not remaining else "*".join(
            [_term(s) for s in remaining] + ([str(rest)] if rest != 1 else [])
        )
        out[out.index(None)] = inferred
    elif remaining or src_const != dst_const:
        raise ShapeError(
            f"cannot reshape {fmt_shape(src)} to {tuple(target)}: element counts differ"
        )
    return tuple(d for d in out if d is not None)


_PRODUCT = re.compile(r"^\w+(\*\w+)+$")  # a product such as "batch*4" (as reshape writes it)


def _factor(shape: Sequence[Dim]) -> tuple[int, list[str]]:
    const = 1
    syms: list[str] = []
    for d in shape:
        if isinstance(d, int):
            const *= d
        else:
            for f in d.split("*") if _PRODUCT.match(d) else [d]:
                if f.isdigit():
                    const *= int(f)
                else:
                    syms.append(f)
    return const, sorted(syms)


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


def eval_dim(d: Dim, bindings: Mapping[str, int] | None = None, *,
             default: int | None = None) -> int:
    """The integer value of a dim: ints as they are, symbolic names and the expressions shape
    rules build (``(H-3)//2+1``, ``N*4``) evaluated with ``bindings``. Unbound names take
    ``default``, or raise ShapeError when it is None. Never negative."""
    if isinstance(d, int):
        return d
    env = bindings or {}
    if d in env:
        return int(env[d])

    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name):
            if n.id in env:
                return int(env[n.id])
            if default is None:
                raise ShapeError(f"symbolic dim '{n.id}' (in '{d}') is not bound; pass "
                                 f"bindings such as {{'{n.id}': 64}}")
            return default
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return int(_BINOPS[type(n.op)](ev(n.left), ev(n.right)))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        raise ShapeError(f"cannot evaluate dim expression '{d}'")

    try:
        return max(0, ev(ast.parse(d, mode="eval")))
    except SyntaxError:
        if default is not None:
            return default
        raise ShapeError(f"cannot evaluate dim expression '{d}'") from None
    except ZeroDivisionError:
        raise ShapeError(f"dim expression '{d}' divides by zero with {dict(env)}") from None
