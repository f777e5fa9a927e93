"""Helpers shared by the inspection tools: module paths, symbolic dims, labels and escaping."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lbdl_graph import shapes
from lbdl_graph.errors import ShapeError
from lbdl_graph.graph import Value
from lbdl_graph.shapes import Dim
from lbdl_graph.types import TensorType

__all__ = [
    "Bindings",
    "eval_dim",
    "fmt_count",
    "fmt_types",
    "module_of",
    "module_prefixes",
    "param_module",
    "resolve_numel",
    "resolve_shape",
    "shorten",
    "type_bytes",
]

Bindings = Mapping[str, int]



def module_of(node_name: str) -> str:
    """The module path of a node: the scope before the first "/" ('' at top level).

    ``encoder.layers.0.attn.q_proj/matmul`` -> ``encoder.layers.0.attn.q_proj``.
    """
    scope, sep, _ = node_name.partition("/")
    return scope if sep else ""


def module_prefixes(path: str) -> list[str]:
    """The enclosing module paths of ``path``, outermost first: a.b.c -> [a, a.b, a.b.c]."""
    if not path:
        return []
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def param_module(name: str, modules: set[str] | frozenset[str]) -> str:
    """The module a parameter belongs to (``fc1.weight`` -> ``fc1``) if that module has nodes."""
    prefix = name.rpartition(".")[0]
    while prefix:
        if prefix in modules:
            return prefix
        prefix = prefix.rpartition(".")[0]
    return ""


def eval_dim(d: Dim, bindings: Bindings | None = None, default: int = 1) -> int:
    """The value of a dim: ints as they are, symbolic names and expressions (``(H-3)//2+1``,
    ``N*4``) evaluated with ``bindings`` (unbound names take ``default``); never negative."""
    try:
        return shapes.eval_dim(d, bindings, default=default)
    except ShapeError:
        return default


def resolve_shape(shape: Sequence[Dim], bindings: Bindings | None = None) -> tuple[int, ...]:
    """A concrete shape: every symbolic dim evaluated with :func:`eval_dim`."""
    return tuple(eval_dim(d, bindings) for d in shape)


def resolve_numel(t: TensorType | Value, bindings: Bindings | None = None) -> int:
    """Element count of a type (or a value's type) with symbolic dims resolved."""
    tt = t.type if isinstance(t, Value) else t
    return math.prod(resolve_shape(tt.shape, bindings))


def type_bytes(t: TensorType, bindings: Bindings | None = None) -> int:
    """Bytes of a tensor of type ``t`` with symbolic dims resolved (4-bit types round up)."""
    return (resolve_numel(t, bindings) * t.dtype.bits + 7) // 8


def fmt_types(values: Sequence[Value | None]) -> str:
    """Types of values as ``f32[N,10], i64[N]`` (absent values print as ``_``)."""
    return ", ".join(str(v.type) if v is not None else "_" for v in values)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def fmt_count(n: int | float) -> str:
    """A count with thousands separators (``1,234,567``)."""
    return f"{int(n):,}"
