"""Hyper-parameter validation shared by the layers: errors name the layer class and point at the
user's line that constructs it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph.errors import LbdlError, ShapeError
from lbdl_graph.source import caller_location

__all__ = ["check_int", "check_prob", "check_tuple", "layer_error"]


def layer_error(layer: str, message: str, cls: type[LbdlError] = ShapeError) -> LbdlError:
    """A typed error ``"<Layer>: message"`` located at the user's line."""
    return cls(f"{layer}: {message}", source=caller_location())


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def check_int(layer: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else a typed error naming the layer."""
    if not _is_int(value) or int(value) < minimum:
        raise layer_error(layer, f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_tuple(layer: str, name: str, value: Any, n: int, *, minimum: int = 1
                ) -> tuple[int, ...]:
    """``value`` (an int or ``n`` ints) as a tuple of ``n`` ints >= ``minimum``."""
    seq: Sequence[Any] = (value,) * n if _is_int(value) else value
    try:
        items = tuple(seq)
    except TypeError:
        raise layer_error(layer, f"{name} must be an int or {n} ints, got {value!r}") from None
    if len(items) != n or not all(_is_int(v) and int(v) >= minimum for v in items):
        raise layer_error(layer, f"{name} must be an integer >= {minimum} or {n} of them, got "
                          f"{value!r}")
    return tuple(int(v) for v in items)


def check_prob(layer: str, name: str, value: Any) -> float:
    """``value`` as a probability in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise layer_error(layer, f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)
