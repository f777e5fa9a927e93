"""ONNX lowerings of the fused ops: linear, fused_conv, attention and fused_elementwise.

* ``linear``: Gemm for a 2-D input, else MatMul + Add; then Relu, or Gelu (opset >= 20; the
  formula before).
* ``fused_conv``: Conv (+ Add of the residual) (+ Relu).
* ``attention``: the standard ``Attention`` operator from opset 23 when ONNX Runtime runs it with
  our semantics (4-D or unsqueezed 3-D/2-D operands with equal batch and head dims, a mask with
  full query and key dims); otherwise MatMul, Mul, Add, a causal Where built from two Ranges
  (not from score-sized iotas) and Softmax.
* ``fused_elementwise``: its program as a chain of standard ops, each step lowered by its op's
  own rule.

Target "ort" emits the same standard operators: measured on ONNX Runtime 1.31's CPU provider
with all graph optimisations, its own optimiser already turns Add + Gelu(tanh) into FastGelu,
transposed MatMuls into FusedMatMul and Conv + Add + Relu into one NCHWc Conv, so emitting those
contrib operators ourselves gives the same session graph; com.microsoft.MultiHeadAttention
(which needs (N, T, H*D) operands, so reshapes around it) ran 1.6-2x slower than the
decomposition on GPT-mini's heads (batch 1 and 16), where the standard Attention (opset 23) is
about 20% faster.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import DType, int64
from lbdl_graph.graph import Node, Value
from lbdl_graph.opdef import OPS
from lbdl_graph.types import TensorType

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []

ATTENTION_OPSET = 23  # the first opset with the standard Attention operator
_ATTENTION_TYPES = frozenset({"float16", "float32"})


def _activation(b: OnnxBuilder, y: str, activation: str, dt: DType) -> str:
    if activation == "relu":
        return b.op("Relu", y, dtype=dt)
    if activation in ("gelu", "gelu_tanh"):
        approximate = "tanh" if activation == "gelu_tanh" else "none"
        out = LOWERINGS[ops.gelu](b, y, approximate=approximate)
        assert isinstance(out, str)  # gelu has one output
        return out
    return y


# ---------------------------------------------------------------------------------------- linear


@LOWERINGS.register(ops.linear)
def _linear_onnx(b: OnnxBuilder, x: str, w: str, bias: str | None, *, activation: str) -> str:
    dt = b.in_type(0).dtype
    if b.in_type(0).ndim == 2 and dt.name in ("float32", "float64"):
        y = b.op("Gemm", x, w, bias, dtype=dt)
    else:
        y = b.op("MatMul", x, w, dtype=dt)
        if bias is not None:
            y = b.op("Add", y, bias, dtype=dt)
    return _activation(b, y, activation, dt)


# ------------------------------------------------------------------------------------ fused_conv


def _ints(v: tuple[int, ...] | None) -> list[int] | None:
    return list(v) if v is not None else None


@LOWERINGS.register(ops.fused_conv)
def _fused_conv_onnx(b: OnnxBuilder, x: str, w: str, bias: str | None, residual: str | None, *,
                     strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                     dilations: tuple[int, ...] | None, group: int, activation: str) -> str:
    dt = b.in_type(0).dtype
    y = b.op("Conv", x, w, bias, dtype=dt, strides=_ints(strides), pads=_ints(pads),
             dilations=_ints(dilations), group=group)
    if residual is not None:
        y = b.op("Add", y, residual, dtype=dt)
    return _activation(b, y, activation, dt)


# ------------------------------------------------------------------------------------- attention


def _same_dims(a: tuple[Any, ...], c: tuple[Any, ...]) -> bool:
    return len(a) == len(c) and all(x == y for x, y in zip(a, c, strict=True))


def _standard_attention_fits(b: OnnxBuilder, mask: str | None) -> bool:
    """Whether ONNX Runtime's Attention (opset 23) computes exactly our op for this node."""
    q, k, v = b.in_type(0), b.in_type(1), b.in_type(2)
    if b.opset < ATTENTION_OPSET or q.dtype.name not in _ATTENTION_TYPES or q.ndim > 4:
        return False
    lead = q.shape[:-2]
    if not (_same_dims(lead, k.shape[:-2]) and _same_dims(lead, v.shape[:-2])):
        return False  # no broadcasting between batch/head dims
    if mask is not None:  # ORT wants the mask's query and key dims spelled out
        m = b.in_type(3)
        if m.ndim < 2 or m.ndim > 4 or m.shape[-2] != q.shape[-2] or m.shape[-1] != k.shape[-2]:
            return False
    return True


def _to_4d(b: OnnxBuilder, x: str, ndim: int) -> str:
    if ndim == 4:
        return x
    return b.op("Unsqueeze", x, b.ints(range(4 - ndim), name="axes"))


def _standard_attention(b: OnnxBuilder, q: str, k: str, v: str, mask: str | None,
                        scale: float, causal: bool) -> str:
    dt = b.in_type(0).dtype
    n = b.in_type(0).ndim
    y = b.op("Attention", _to_4d(b, q, n), _to_4d(b, k, n), _to_4d(b, v, n), mask, dtype=dt,
             data=(0, 1, 2, 3), is_causal=int(causal), scale=scale)
    if n == 4:
        return y
    return b.op("Squeeze", y, b.ints(range(4 - n), name="axes"))


def _length(b: OnnxBuilder, x: str, axis: int) -> str:
    """The scalar int64 length of axis ``axis`` (negative) of ``x``."""
    dim = b.op("Shape", x, start=axis, end=axis + 1 if axis < -1 else None)
    return b.op("Squeeze", dim, b.ints([0], name="axes"))


def _decomposed_attention(b: OnnxBuilder, q: str, k: str, v: str, mask: str | None,
                          scale: float, causal: bool) -> str:
    dt = b.in_type(0).dtype
    nk = b.in_type(1).ndim
    kt = b.op("Transpose", k, perm=[*range(nk - 2), nk - 1, nk - 2])
    s = b.op("Mul", b.op("MatMul", q, kt, dtype=dt), b.scalar(scale, dt, name="scale"),
             dtype=dt)
    if mask is not None:
        s = b.op("Add", s, mask, dtype=dt)
    if causal:  # hide key j > query i: a (Lq, Lk) condition from two ranges
        zero, one = b.scalar(0, int64, name="zero"), b.scalar(1, int64, name="one")
        rows = b.op("Range", zero, _length(b, q, -2), one)
        cols = b.op("Range", zero, _length(b, k, -2), one)
        hide = b.op("Greater", cols, b.op("Unsqueeze", rows, b.ints([1], name="axes")))
        s = b.op("Where", hide, b.scalar(-np.inf, dt, name="minus_inf"), s, dtype=dt,
                 data=(1, 2))
    return b.op("MatMul", b.op("Softmax", s, axis=-1, dtype=dt), v, dtype=dt)


@LOWERINGS.register(ops.attention)
def _attention_onnx(b: OnnxBuilder, q: str, k: str, v: str, mask: str | None, *,
                    scale: float | None, causal: bool) -> str:
    # the type rule requires a static head size when scale is None
    c = 1.0 / math.sqrt(int(b.in_type(0).shape[-1])) if scale is None else scale
    if _standard_attention_fits(b, mask):
        return _standard_attention(b, q, k, v, mask, c, causal)
    return _decomposed_attention(b, q, k, v, mask, c, causal)


# ----------------------------------------------------------------------------- fused_elementwise


@LOWERINGS.register(ops.fused_elementwise)
def _fused_elementwise_onnx(b: OnnxBuilder, *xs: str, program: Any) -> str:
    regs: list[tuple[str, TensorType]] = [(x, b.in_type(i)) for i, x in enumerate(xs)]
    for i, (name, args, attr_items) in enumerate(program):
        op = OPS[name]
        attrs = op.check_attrs(dict(attr_items))
        if op is ops.constant:
            regs.append((b.constant(attrs["value"], name="const"), op.infer_types([], attrs)[0]))
            continue
        ins = [Value(f"r{a}", regs[a][1]) for a in args]
        (t,) = op.infer_types([v.type for v in ins], attrs)
        node = Node(op, tuple(ins), (Value(f"r{len(regs)}", t),), attrs, f"step{i}_{name}",
                    b.origin.source)
        (out,) = b.lower(node, [regs[a][0] for a in args])
        regs.append((out, t))
    return regs[-1][0]
