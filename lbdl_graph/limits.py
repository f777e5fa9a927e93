"""The allocation limit: how many bytes one tensor may take before we refuse to build it.

A tiny file or flag can declare a huge tensor (a ConstantOfShape of 1e12 elements, an
initializer of 2^40 floats, ``--bind N=10**12``). Every place that allocates from a size it
read checks it here first and raises :class:`~lbdl_graph.errors.ResourceError` naming the
tensor and the bytes it would take. The limit is ``LBDL_MAX_ALLOC_BYTES`` (environment), the
CLI's ``--max-alloc-bytes`` or :func:`set_max_alloc_bytes`; the default is 16 GiB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import ResourceError

if TYPE_CHECKING:
    from .graph import Graph

__all__ = [
    "DEFAULT_MAX_ALLOC_BYTES",
    "ENV_VAR",
    "check_alloc",
    "check_static_sizes",
    "max_alloc_bytes",
    "nbytes_of",
    "set_max_alloc_bytes",
]

ENV_VAR = "LBDL_MAX_ALLOC_BYTES"
DEFAULT_MAX_ALLOC_BYTES = 16 << 30
_override: int | None = None


def _parse(text: str) -> int:
    """An integer byte count, with an optional K/M/G/T suffix (powers of 1024)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    for i, suffix in enumerate("KMGT", start=1):
        if t.endswith(suffix):
            t, scale = t[:-1], 1024 ** i
    try:
        value = int(float(t) * scale) if "." in t or "E" in t else int(t) * scale
    except (ValueError, OverflowError):
        raise ResourceError(f"{ENV_VAR}={text!r} is not a byte count (e.g. 8G or 1000000)",
                            hint=f"set {ENV_VAR} to a positive integer") from None
    if value <= 0:
        raise ResourceError(f"{ENV_VAR}={text!r}: the limit must be positive")
    return value


def max_alloc_bytes() -> int:
    """The current limit: :func:`set_max_alloc_bytes`, else the environment, else 16 GiB."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR)
    return _parse(env) if env else DEFAULT_MAX_ALLOC_BYTES


def set_max_alloc_bytes(limit: int | str | None) -> None:
    """Set the limit for this process (None: back to the environment / default)."""
    global _override
    _override = None if limit is None else _parse(str(limit))


def nbytes_of(shape: Iterable[int], itemsize: float) -> int:
    """Bytes a dense tensor of ``shape`` takes (exact Python integers, no overflow)."""
    n = math.prod(int(d) for d in shape)
    return math.ceil(n * itemsize)


def check_alloc(shape: Iterable[int], itemsize: float, what: str, *,
                node: str | None = None, op: str | None = None) -> int:
    """Raise ResourceError if a tensor of ``shape`` would exceed the limit; return its bytes."""
    dims = [int(d) for d in shape]
    nbytes = nbytes_of(dims, itemsize)
    limit = max_alloc_bytes()
    if nbytes > limit:
        raise ResourceError(
            f"{what}: shape {dims} would take {nbytes:,} bytes ({_human(nbytes)}), over the "
            f"allocation limit of {limit:,} bytes ({_human(limit)})", nbytes=nbytes, node=node,
            op=op, hint=f"if this is intended, raise the limit with {ENV_VAR}=<bytes> or "
                        "--max-alloc-bytes")
    return nbytes


def check_static_sizes(graph: Graph) -> None:
    """Refuse a graph one of whose values has a static shape over the limit (names it)."""
    for node in graph.nodes:
        for v in node.outputs:
            shape = v.shape
            if all(isinstance(d, int) for d in shape):
                check_alloc(shape, v.type.dtype.itemsize, f"value %{v.name}",
                            node=node.name, op=node.op.name)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"
