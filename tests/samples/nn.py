"""Samples of the nn ops: matmul, convolutions, pooling and normalisation.

The oracle is the ONNX reference evaluator (onnx 1.23), except where it is known to be wrong:
its MaxPool with all strides and dilations 1 returns per-channel (not whole-tensor) indices, its
ceil-mode pools shift the windows when the ceil extension is two or more elements, and its
ConvTranspose mishandles group > 1 and fails on dilations with output_padding. Those samples use
``_pool_reference`` / ``_conv_transpose_reference``, direct loops over the definition.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lbdl_graph import ops
from tests.op_db import Arrays, OpSample
from tests.op_db import randn as _randn
from tests.op_db import tol as _tol

__all__ = ["SAMPLES"]

F32 = np.float32
F64 = np.float64
Shape = tuple[int, ...]





def _onnx_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Our attributes as ONNX ones: unset (None) ones dropped, bools as ints."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in attrs.items() if v is not None}


# ---------------------------------------------------------------------------------------- matmul


def _matmul(label: str, a: Shape, b: Shape, dt: type = F32) -> OpSample:
    return OpSample(ops.matmul, _randn(a, b, dt=dt), label=label, onnx_op="MatMul", **_tol(dt))


def _int_matmul(rng: np.random.Generator) -> Arrays:
    return [rng.integers(-5, 6, (3, 4)).astype(np.int64),
            rng.integers(-5, 6, (4, 2)).astype(np.int64)]


MATMUL = [
    _matmul("2d", (3, 4), (4, 5)),
    _matmul("batched_broadcast", (2, 1, 3, 4), (5, 4, 6)),
    _matmul("batch_vs_2d", (2, 3, 4), (4, 2)),
    _matmul("1d_lhs", (4,), (2, 4, 3)),
    _matmul("1d_rhs", (2, 3, 4), (4,)),
    _matmul("1d_1d", (5,), (5,)),
    _matmul("f64", (2, 3, 4), (2, 4, 3), F64),
    OpSample(ops.matmul, _int_matmul, label="int64", onnx_op="MatMul", grad=False),
]

# --------------------------------------------------------------------------------- convolutions


def _conv(label: str, x: Shape, w: Shape, bias: bool = True, dt: type = F32,
          **attrs: Any) -> OpSample:
    b = (w[0],) if bias else None
    return OpSample(
        ops.conv, _randn(x, w, b, dt=dt), attrs=attrs, label=label, onnx_op="Conv",
        onnx_attrs={"kernel_shape": list(w[2:]), **_onnx_attrs(attrs)}, **_tol(dt))


def _conv_transpose_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *,
                              strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                              dilations: tuple[int, ...] | None, group: int,
                              output_padding: tuple[int, ...] | None) -> np.ndarray:
    """Transposed convolution as its definition: every input pixel scatters ``x * w`` to
    output ``i * stride + tap * dilation - pad_begin`` of its group's output channels."""
    k = x.ndim - 2
    s = strides or (1,) * k
    p = pads or (0,) * (2 * k)
    d = dilations or (1,) * k
    op = output_padding or (0,) * k
    ins, kernel = x.shape[2:], w.shape[2:]
    cg, mg = x.shape[1] // group, w.shape[1]
    out = [s[a] * (ins[a] - 1) + op[a] + d[a] * (kernel[a] - 1) + 1 - p[a] - p[a + k]
           for a in range(k)]
    y = np.zeros((x.shape[0], mg * group, *out))
    for ci, i, t in itertools.product(range(x.shape[1]), np.ndindex(*ins), np.ndindex(*kernel)):
        o = tuple(i[a] * s[a] + t[a] * d[a] - p[a] for a in range(k))
        if all(0 <= o[a] < out[a] for a in range(k)):
            m0 = ci // cg * mg
            y[(slice(None), slice(m0, m0 + mg), *o)] += np.outer(x[(slice(None), ci, *i)],
                                                                 w[(ci, slice(None), *t)])
    if b is not None:
        y += b.reshape(-1, *(1,) * k)
    return y.astype(x.dtype)


def _conv_t(label: str, x: Shape, w: Shape, bias: bool = True, dt: type = F32,
            brute: bool = False, **attrs: Any) -> OpSample:
    b = (w[1] * attrs.get("group", 1),) if bias else None
    return OpSample(
        ops.conv_transpose, _randn(x, w, b, dt=dt), attrs=attrs, label=label,
        reference=_conv_transpose_reference if brute else None,
        onnx_op=None if brute else "ConvTranspose",
        onnx_attrs={"kernel_shape": list(w[2:]), **_onnx_attrs(attrs)}, **_tol(dt))


CONV = [
    _conv("1d_stride_pads", (2, 3, 11), (4, 3, 3), strides=(2,), pads=(1, 2)),
    _conv("1d_dilated", (1, 2, 12), (3, 2, 4), bias=False, dilations=(3,), pads=(0, 1)),
    _conv("2d_lenet", (2, 1, 12, 12), (6, 1, 5, 5)),
    _conv("2d_same", (2, 3, 7, 6), (4, 3, 3, 3), pads=(1, 1, 1, 1)),
    _conv("2d_stride_asym_pads_dilation", (2, 3, 9, 8), (5, 3, 3, 2), bias=False,
          strides=(2, 3), pads=(0, 1, 2, 1), dilations=(2, 1)),
    _conv("2d_groups", (2, 4, 7, 6), (6, 2, 3, 3), group=2, pads=(1, 0, 1, 2)),
    _conv("2d_depthwise", (1, 4, 6, 7), (4, 1, 3, 3), group=4, strides=(2, 2),
          pads=(1, 1, 1, 1)),
    _conv("2d_depthwise_multiplier", (2, 3, 5, 5), (6, 1, 3, 3), group=3, dilations=(2, 1)),
    _conv("2d_pointwise", (2, 5, 4, 3), (7, 5, 1, 1)),
    _conv("3d", (1, 2, 5, 6, 4), (3, 2, 2, 3, 2), strides=(1, 2, 1), pads=(1, 0, 1, 0, 1, 1),
          dilations=(1, 1, 2)),
    _conv("3d_groups", (2, 4, 4, 4, 3), (2, 2, 3, 1, 2), group=2, pads=(1, 0, 0, 1, 0, 1)),
    _conv("2d_f64", (2, 3, 6, 5), (4, 3, 3, 2), dt=F64, strides=(1, 2), pads=(2, 1, 0, 1),
          dilations=(1, 2)),
]

CONV_TRANSPOSE = [
    _conv_t("1d_stride", (2, 3, 5), (3, 2, 3), strides=(2,)),
    _conv_t("1d_pads_dilation", (1, 2, 6), (2, 3, 3), bias=False, pads=(2, 1), dilations=(2,)),
    _conv_t("2d_basic", (2, 3, 4, 5), (3, 4, 3, 3)),
    _conv_t("2d_stride_output_padding", (2, 3, 4, 3), (3, 2, 3, 3), strides=(2, 2),
            pads=(1, 1, 1, 1), output_padding=(1, 1)),
    _conv_t("2d_asym_pads_dilation", (1, 2, 5, 4), (2, 3, 2, 3), bias=False, strides=(1, 2),
            pads=(0, 1, 2, 0), dilations=(2, 1)),
    _conv_t("2d_output_padding_dilation", (1, 2, 3, 3), (2, 2, 2, 2), brute=True,
            strides=(2, 3), dilations=(3, 2), pads=(1, 0, 0, 1), output_padding=(1, 2)),
    _conv_t("2d_groups", (1, 4, 4, 4), (4, 3, 3, 3), brute=True, group=2, strides=(2, 1),
            pads=(1, 0, 0, 1)),
    _conv_t("2d_depthwise", (2, 3, 4, 4), (3, 1, 3, 3), brute=True, group=3, strides=(2, 2),
            output_padding=(1, 0)),
    _conv_t("3d", (1, 2, 3, 3, 2), (2, 2, 2, 3, 2), strides=(2, 1, 2),
            pads=(0, 1, 1, 1, 0, 0), output_padding=(1, 0, 1)),
    _conv_t("3d_groups_dilated", (1, 4, 3, 2, 3), (4, 2, 2, 2, 3), brute=True, group=2,
            strides=(1, 2, 2), dilations=(2, 1, 1), pads=(1, 0, 1, 0, 1, 0),
            output_padding=(0, 1, 1)),
    _conv_t("2d_f64", (2, 2, 3, 4), (2, 3, 3, 2), dt=F64, strides=(3, 2), pads=(1, 0, 2, 1),
            output_padding=(2, 1)),
]

# ------------------------------------------------------------------------------------- pooling


def _pool_reference(x: np.ndarray, *, kind: str, kernel_shape: tuple[int, ...],
                    strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                    ceil_mode: bool, dilations: tuple[int, ...] | None = None,
                    count_include_pad: bool = False) -> Any:
    """Pooling by visiting every element of every window (ONNX semantics, PyTorch ceil mode)."""
    k = len(kernel_shape)
    s = strides or (1,) * k
    p = pads or (0,) * (2 * k)
    d = dilations or (1,) * k
    dims = x.shape[2:]
    rnd = math.ceil if ceil_mode else math.floor
    out = []
    for i in range(k):
        o = rnd((dims[i] + p[i] + p[i + k] - d[i] * (kernel_shape[i] - 1) - 1) / s[i]) + 1
        out.append(o - 1 if ceil_mode and (o - 1) * s[i] >= dims[i] + p[i] else o)
    y = np.zeros((*x.shape[:2], *out), x.dtype)
    index = np.zeros(y.shape, np.int64)
    for n, c, *o in itertools.product(*map(range, y.shape)):
        best, best_at, total, count = -math.inf, None, 0.0, 0
        for t in itertools.product(*map(range, kernel_shape)):
            pos = tuple(o[i] * s[i] - p[i] + t[i] * d[i] for i in range(k))
            inside = all(0 <= pos[i] < dims[i] for i in range(k))
            padded = all(-p[i] <= pos[i] < dims[i] + p[i + k] for i in range(k))
            if inside:
                v = float(x[(n, c, *pos)])
                total += v
                if v > best:
                    best, best_at = v, (n, c, *pos)
            count += inside or (count_include_pad and padded)
        y[(n, c, *o)] = best if kind == "max" else total / count
        index[(n, c, *o)] = -1 if best_at is None else np.ravel_multi_index(best_at, x.shape)
    return (y, index) if kind == "max" else y


def _max_pool(label: str, x: Shape, dt: type = F32, brute: bool = False,
              **attrs: Any) -> OpSample:
    def reference(x: np.ndarray, **a: Any) -> Any:
        return _pool_reference(x, kind="max", **a)

    return OpSample(ops.max_pool, _randn(x, dt=dt), attrs=attrs, label=label,
                    reference=reference if brute else None,
                    onnx_op=None if brute else "MaxPool", onnx_attrs=_onnx_attrs(attrs),
                    **_tol(dt))


def _avg_pool(label: str, x: Shape, dt: type = F32, brute: bool = False,
              **attrs: Any) -> OpSample:
    def reference(x: np.ndarray, **a: Any) -> Any:
        return _pool_reference(x, kind="avg", **a)

    return OpSample(ops.avg_pool, _randn(x, dt=dt), attrs=attrs, label=label,
                    reference=reference if brute else None,
                    onnx_op=None if brute else "AveragePool", onnx_attrs=_onnx_attrs(attrs),
                    **_tol(dt))


MAX_POOL = [
    _max_pool("2d_lenet", (2, 3, 8, 8), kernel_shape=(2, 2), strides=(2, 2)),
    _max_pool("1d_pads", (2, 2, 9), kernel_shape=(3,), strides=(2,), pads=(1, 1)),
    _max_pool("2d_resnet_stem", (1, 2, 9, 8), kernel_shape=(3, 3), strides=(2, 2),
              pads=(1, 1, 1, 1)),
    _max_pool("2d_asym_pads_strides", (2, 2, 7, 9), kernel_shape=(3, 2), strides=(2, 3),
              pads=(0, 1, 2, 1)),
    _max_pool("2d_ceil", (1, 2, 5, 7), kernel_shape=(2, 2), strides=(2, 2), ceil_mode=True),
    _max_pool("1d_ceil_drops_window_in_pad", (1, 2, 5), kernel_shape=(2,), strides=(2,),
              pads=(1, 1), ceil_mode=True),
    _max_pool("2d_dilated", (1, 2, 7, 8), kernel_shape=(2, 3), dilations=(2, 2)),
    _max_pool("2d_dilated_strided_ceil", (1, 3, 10, 9), kernel_shape=(3, 2), strides=(2, 3),
              dilations=(2, 1), pads=(1, 0, 1, 1), ceil_mode=True),
    _max_pool("3d", (1, 2, 5, 4, 6), kernel_shape=(2, 2, 3), strides=(2, 2, 2),
              pads=(0, 1, 1, 1, 0, 1)),
    _max_pool("2d_stride1", (2, 2, 5, 6), brute=True, kernel_shape=(3, 3), pads=(1, 1, 1, 1)),
    _max_pool("3d_stride1_ceil", (1, 2, 4, 3, 5), brute=True, kernel_shape=(2, 2, 2),
              pads=(0, 1, 0, 0, 0, 1), ceil_mode=True),
    _max_pool("2d_f64", (2, 2, 6, 6), F64, kernel_shape=(3, 3), strides=(3, 2),
              pads=(1, 0, 1, 1)),
]

AVG_POOL = [
    _avg_pool("2d_lenet", (2, 3, 8, 8), kernel_shape=(2, 2), strides=(2, 2)),
    _avg_pool("1d", (2, 3, 9), kernel_shape=(4,), strides=(2,)),
    _avg_pool("2d_pads_exclude", (2, 2, 7, 6), kernel_shape=(3, 3), strides=(2, 2),
              pads=(1, 1, 1, 1)),
    _avg_pool("2d_pads_include", (2, 2, 7, 6), kernel_shape=(3, 3), strides=(2, 2),
              pads=(1, 1, 1, 1), count_include_pad=True),
    _avg_pool("2d_asym_pads_include", (1, 2, 6, 7), kernel_shape=(3, 2), strides=(1, 2),
              pads=(2, 0, 0, 1), count_include_pad=True),
    _avg_pool("2d_ceil_exclude", (1, 2, 5, 7), kernel_shape=(2, 2), strides=(2, 2),
              ceil_mode=True),
    _avg_pool("2d_ceil_pads_include", (1, 2, 6, 5), kernel_shape=(3, 2), strides=(2, 2),
              pads=(1, 0, 1, 0), ceil_mode=True, count_include_pad=True),
    _avg_pool("1d_ceil_long_tail", (1, 2, 4), brute=True, kernel_shape=(3,), strides=(3,),
              ceil_mode=True),
    _avg_pool("1d_ceil_long_tail_include", (1, 2, 7), brute=True, kernel_shape=(3,),
              strides=(3,), pads=(1, 1), ceil_mode=True, count_include_pad=True),
    _avg_pool("3d", (1, 2, 4, 5, 6), kernel_shape=(2, 3, 2), strides=(2, 1, 2),
              pads=(1, 0, 0, 0, 1, 1)),
    _avg_pool("2d_f64_include", (2, 2, 5, 5), F64, kernel_shape=(2, 3), strides=(2, 2),
              pads=(1, 1, 0, 1), count_include_pad=True),
]

# ------------------------------------------------------------------------------- normalisation


def _batch_norm_inputs(x: Shape, dt: type) -> Callable[[np.random.Generator], Arrays]:
    def make(rng: np.random.Generator) -> Arrays:
        c = x[1]
        return [rng.standard_normal(x).astype(dt), rng.standard_normal(c).astype(dt),
                rng.standard_normal(c).astype(dt), rng.standard_normal(c).astype(dt),
                rng.uniform(0.5, 2.0, c).astype(dt)]

    return make


def _batch_norm(label: str, x: Shape, dt: type = F32, **attrs: Any) -> OpSample:
    return OpSample(ops.batch_norm, _batch_norm_inputs(x, dt), attrs=attrs, label=label,
                    onnx_op="BatchNormalization", onnx_attrs=_onnx_attrs(attrs), **_tol(dt))


def _layer_norm(label: str, x: Shape, axis: int, bias: bool = True, dt: type = F32,
                **attrs: Any) -> OpSample:
    norm = x[axis % len(x):]
    return OpSample(ops.layer_norm, _randn(x, norm, norm if bias else None, dt=dt),
                    attrs={"axis": axis, **attrs}, label=label, onnx_op="LayerNormalization",
                    onnx_attrs={"axis": axis, **_onnx_attrs(attrs)}, **_tol(dt))


NORM = [
    _batch_norm("2d", (2, 3, 4, 5)),
    _batch_norm("nc", (6, 4), epsilon=1e-3),
    _batch_norm("1d_f64", (2, 3, 7), F64, epsilon=0.125),
    _batch_norm("3d", (1, 2, 3, 2, 4)),
    _layer_norm("last", (2, 3, 8), -1),
    _layer_norm("two_axes_no_bias", (2, 3, 4), 1, bias=False, epsilon=1e-3),
    _layer_norm("positive_axis", (3, 2, 5), 2),
    _layer_norm("all_axes_f64", (4, 6), 0, dt=F64, epsilon=0.5),
]

SAMPLES: list[OpSample] = [*MATMUL, *CONV, *CONV_TRANSPOSE, *MAX_POOL, *AVG_POOL, *NORM]
