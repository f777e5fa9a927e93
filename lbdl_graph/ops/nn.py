"""Neural-network ops: matmul, convolutions, pooling and normalisation."""

from __future__ import annotations

import math

from ..dtypes import int64
from ..errors import ShapeError
from ..opdef import Attr, Trait, defop
from ..shapes import Dim, broadcast_shapes, conv_out_dim, conv_transpose_out_dim, fmt_shape
from ..types import TensorType
from ._rules import require, same_dtype

D = Trait.DIFFERENTIABLE


def _matmul_rule(a: TensorType, b: TensorType) -> TensorType:
    dt = same_dtype(a, b)
    require(a, "input", kinds=("float", "int"))
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul needs operands of rank >= 1, got {a} and {b}")
    ash = (1, *a.shape) if a.ndim == 1 else a.shape
    bsh = (*b.shape, 1) if b.ndim == 1 else b.shape
    k1, k2 = ash[-1], bsh[-2]
    if (isinstance(k1, int) and isinstance(k2, int) and k1 != k2) or (
        isinstance(k1, str) and isinstance(k2, str) and k1 != k2
    ):
        raise ShapeError(f"matmul: inner dims differ ({k1} vs {k2}) for {a} @ {b}")
    try:
        batch = broadcast_shapes(ash[:-2], bsh[:-2])
    except ShapeError:
        raise ShapeError(f"matmul: batch dims of {a} and {b} cannot be broadcast") from None
    shape: list[Dim] = [*batch, ash[-2], bsh[-1]]
    if a.ndim == 1:
        shape.pop(-2)
    if b.ndim == 1:
        shape.pop(-1)
    return TensorType(dt, tuple(shape))


matmul = defop("matmul", ("a", "b"), infer=_matmul_rule, traits=(D,), onnx="MatMul",
               doc="matrix product with NumPy batching/broadcasting")

_CONV = (Attr("strides", "ints", None, True), Attr("pads", "ints", None, True),
         Attr("dilations", "ints", None, True), Attr("group", "int", 1))


def _spatial(x: TensorType, k: int, strides: tuple[int, ...] | None,
             pads: tuple[int, ...] | None, dilations: tuple[int, ...] | None,
             what: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    s = strides or (1,) * k
    p = pads or (0,) * (2 * k)
    d = dilations or (1,) * k
    if len(s) != k or len(p) != 2 * k or len(d) != k:
        raise ShapeError(f"{what}: strides/dilations need {k} entries and pads {2 * k} for {x}")
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ShapeError(f"{what}: strides and dilations must be >= 1, pads >= 0 "
                         f"(strides={s}, pads={p}, dilations={d})")
    return s, p, d


def _conv_rule(x: TensorType, w: TensorType, b: TensorType | None, *,
               strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
               dilations: tuple[int, ...] | None, group: int) -> TensorType:
    dt = same_dtype(x, w, b)
    require(x, "input", kinds=("float",))
    k = w.ndim - 2
    if k < 1 or x.ndim != w.ndim:
        raise ShapeError(f"conv: input {x} and weight {w} must have the same rank >= 3")
    s, p, d = _spatial(x, k, strides, pads, dilations, "conv")
    m, cg = w.shape[0], w.shape[1]
    if isinstance(x.shape[1], int) and isinstance(cg, int) and x.shape[1] != cg * group:
        raise ShapeError(f"conv: input has {x.shape[1]} channels, weight {w} with group={group} "
                         f"expects {cg * group}")
    if isinstance(m, int) and m % group:
        raise ShapeError(f"conv: {m} output channels are not divisible by group={group}")
    if b is not None and (b.ndim != 1 or b.shape[0] != m):
        raise ShapeError(f"conv: bias {b} should have shape [{m}]")
    kernel = [int(v) for v in w.shape[2:]]
    out = [conv_out_dim(x.shape[2 + i], kernel[i], s[i], p[i] + p[i + k], d[i])
           for i in range(k)]
    return TensorType(dt, (x.shape[0], m, *out))


conv = defop("conv", ("x", "w", "b?"), infer=_conv_rule, attrs=_CONV, traits=(D,), onnx="Conv",
             doc="N-d convolution (cross-correlation); w is (out, in/group, *kernel)")


def _conv_transpose_rule(x: TensorType, w: TensorType, b: TensorType | None, *,
                         strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                         dilations: tuple[int, ...] | None, group: int,
                         output_padding: tuple[int, ...] | None) -> TensorType:
    dt = same_dtype(x, w, b)
    require(x, "input", kinds=("float",))
    k = w.ndim - 2
    if k < 1 or x.ndim != w.ndim:
        raise ShapeError(f"conv_transpose: input {x} and weight {w} must have the same rank >= 3")
    s, p, d = _spatial(x, k, strides, pads, dilations, "conv_transpose")
    op = output_padding or (0,) * k
    if len(op) != k or any(o >= max(si, di) for o, si, di in zip(op, s, d, strict=True)):
        raise ShapeError(f"conv_transpose: output_padding {op} must be smaller than stride or "
                         "dilation")
    if isinstance(x.shape[1], int) and isinstance(w.shape[0], int) and x.shape[1] != w.shape[0]:
        raise ShapeError(f"conv_transpose: input has {x.shape[1]} channels, weight {w} expects "
                         f"{w.shape[0]}")
    m = w.shape[1] * group if isinstance(w.shape[1], int) else w.shape[1]
    if b is not None and (b.ndim != 1 or b.shape[0] != m):
        raise ShapeError(f"conv_transpose: bias {b} should have shape [{m}]")
    kernel = [int(v) for v in w.shape[2:]]
    out = [conv_transpose_out_dim(x.shape[2 + i], kernel[i], s[i], p[i] + p[i + k], d[i], op[i])
           for i in range(k)]
    return TensorType(dt, (x.shape[0], m, *out))


conv_transpose = defop(
    "conv_transpose", ("x", "w", "b?"), infer=_conv_transpose_rule,
    attrs=(*_CONV, Attr("output_padding", "ints", None, True)), traits=(D,),
    onnx="ConvTranspose", doc="N-d transposed convolution; w is (in, out/group, *kernel)")

_POOL = (Attr("kernel_shape", "ints"), Attr("strides", "ints", None, True),
         Attr("pads", "ints", None, True), Attr("ceil_mode", "bool", False))


def _pool_dims(x: TensorType, kernel_shape: tuple[int, ...], strides: tuple[int, ...] | None,
               pads: tuple[int, ...] | None, dilations: tuple[int, ...] | None,
               ceil_mode: bool, what: str) -> tuple[Dim, ...]:
    require(x, "input", kinds=("float",))
    k = len(kernel_shape)
    if x.ndim != k + 2 or min(kernel_shape, default=0) < 1:
        raise ShapeError(f"{what}: kernel_shape {kernel_shape} does not fit input {x}")
    s, p, d = _spatial(x, k, strides, pads, dilations, what)
    out: list[Dim] = []
    for i in range(k):
        dim = x.shape[2 + i]
        if ceil_mode and isinstance(dim, int):
            eff = d[i] * (kernel_shape[i] - 1) + 1
            n = math.ceil((dim + p[i] + p[i + k] - eff) / s[i]) + 1
            if (n - 1) * s[i] >= dim + p[i]:
                n -= 1
            out.append(n)
        elif ceil_mode:
            raise ShapeError(f"{what}: ceil_mode needs static spatial dims, got {x}")
        else:
            out.append(conv_out_dim(dim, kernel_shape[i], s[i], p[i] + p[i + k], d[i]))
    for i in range(k):
        if max(p[i], p[i + k]) >= kernel_shape[i] * d[i]:
            raise ShapeError(f"{what}: padding {p} must be smaller than the window")
    return (x.shape[0], x.shape[1], *out)


def _max_pool_rule(x: TensorType, *, kernel_shape: tuple[int, ...],
                   strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                   ceil_mode: bool, dilations: tuple[int, ...] | None
                   ) -> tuple[TensorType, TensorType]:
    shape = _pool_dims(x, kernel_shape, strides, pads, dilations, ceil_mode, "max_pool")
    return x.with_shape(shape), TensorType(int64, shape)


max_pool = defop(
    "max_pool", ("x",), infer=_max_pool_rule, attrs=(*_POOL, Attr("dilations", "ints", None, True)),
    outputs=2, traits=(D,), onnx="MaxPool",
    doc="window max; outputs (values, flat int64 indices into x as ONNX MaxPool)")


def _avg_pool_rule(x: TensorType, *, kernel_shape: tuple[int, ...],
                   strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                   ceil_mode: bool, count_include_pad: bool) -> TensorType:
    return x.with_shape(_pool_dims(x, kernel_shape, strides, pads, None, ceil_mode, "avg_pool"))


avg_pool = defop(
    "avg_pool", ("x",), infer=_avg_pool_rule,
    attrs=(*_POOL, Attr("count_include_pad", "bool", False)), traits=(D,), onnx="AveragePool",
    doc="window mean; padding counts in the divisor only with count_include_pad")


def _batch_norm_rule(x: TensorType, scale: TensorType, bias: TensorType, mean: TensorType,
                     var: TensorType, *, epsilon: float) -> TensorType:
    same_dtype(x, scale, bias, mean, var)
    require(x, "input", kinds=("float",))
    if x.ndim < 2:
        raise ShapeError(f"batch_norm needs (N, C, ...) input, got {x}")
    c = x.shape[1]
    for name, t in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var)):
        if t.ndim != 1 or t.shape[0] != c:
            raise ShapeError(f"batch_norm: {name} {t} should have shape [{c}] for input {x}")
    return x


batch_norm = defop(
    "batch_norm", ("x", "scale", "bias", "mean", "var"), infer=_batch_norm_rule,
    attrs=(Attr("epsilon", "float", 1e-5),), traits=(D,), onnx="BatchNormalization",
    doc="inference batch norm over channel axis 1 with the given statistics")


def _layer_norm_rule(x: TensorType, scale: TensorType, bias: TensorType | None, *, axis: int,
                     epsilon: float) -> TensorType:
    same_dtype(x, scale, bias)
    require(x, "input", kinds=("float",))
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"layer_norm: axis {axis} out of range for {x}")
    normalized = x.shape[axis % x.ndim:]
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and tuple(t.shape) != tuple(normalized):
            raise ShapeError(f"layer_norm: {name} {t} should have shape {fmt_shape(normalized)}")
    return x


layer_norm = defop(
    "layer_norm", ("x", "scale", "bias?"), infer=_layer_norm_rule,
    attrs=(Attr("axis", "int", -1), Attr("epsilon", "float", 1e-5)), traits=(D,),
    onnx="LayerNormalization", doc="normalise over axes [axis, rank) then scale and shift")
