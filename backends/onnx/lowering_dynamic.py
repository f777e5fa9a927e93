"""ONNX lowerings of lbdl_graph.ops.dynamic: the run-time shape is the ONNX operand as is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbdl_graph import ops

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []


@LOWERINGS.register(ops.shape_of)
def _shape_of_onnx(b: OnnxBuilder, x: str, *, start: int, end: int | None) -> str:
    attrs: dict[str, Any] = {"start": start} if start else {}
    if end is not None:
        attrs["end"] = end
    return b.op("Shape", x, **attrs)


@LOWERINGS.register(ops.dynamic_reshape)
def _dynamic_reshape_onnx(b: OnnxBuilder, x: str, shape: str, *, dims: Sequence[Any],
                          allowzero: bool) -> str:
    if allowzero:
        return b.op("Reshape", x, shape, dtype=b.in_type(0).dtype, data=(0,), allowzero=1)
    return b.op("Reshape", x, shape, dtype=b.in_type(0).dtype, data=(0,))


@LOWERINGS.register(ops.dynamic_expand)
def _dynamic_expand_onnx(b: OnnxBuilder, x: str, shape: str, *, dims: Sequence[Any]) -> str:
    return b.op("Expand", x, shape, dtype=b.in_type(0).dtype, data=(0,))


@LOWERINGS.register(ops.dynamic_slice)
def _dynamic_slice_onnx(b: OnnxBuilder, x: str, starts: str, ends: str, *, axes: Sequence[int],
                        steps: Sequence[int] | None, dims: Sequence[Any]) -> str:
    return b.op("Slice", x, starts, ends, b.ints(axes, name="axes"),
                b.ints(steps, name="steps") if steps is not None else None,
                dtype=b.in_type(0).dtype, data=(0,))


@LOWERINGS.register(ops.dynamic_range)
def _dynamic_range_onnx(b: OnnxBuilder, start: str, limit: str, delta: str, *,
                        dims: Sequence[Any]) -> str:
    return b.op("Range", start, limit, delta)
