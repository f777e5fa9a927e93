"""ONNX Resize as constant interpolation matrices (static shapes only).

Resize is separable and linear in the data: along each resized axis the output is ``W @ x``
for an (out, in) matrix that depends only on the sizes and attributes. The matrices are computed
here with the formulas of the ONNX specification (coordinate transformation, nearest rounding,
linear / cubic coefficients with optional antialiasing, exclude_outside, tf_crop_and_resize
extrapolation) and applied with ``gather`` (nearest) or ``matmul`` (linear, cubic).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .context import NodeCtx, handles

Coeffs = Callable[[float, float], np.ndarray]


def _nearest(mode: str) -> Coeffs:
    def coeffs(ratio: float, scale: float) -> np.ndarray:
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        lower = {"round_prefer_floor": ratio <= 0.5, "round_prefer_ceil": ratio < 0.5,
                 "floor": True, "ceil": False}[mode]
        return np.array([1.0, 0.0]) if lower else np.array([0.0, 1.0])

    return coeffs


def _linear(antialias: bool) -> Coeffs:
    def coeffs(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([1 - ratio, ratio])
        s = min(scale, 1.0)
        start = int(np.floor(-1 / s) + 1)
        args = (np.arange(start, start + 2 - 2 * start) - ratio) * s
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum()

    return coeffs


def _cubic(a: float, antialias: bool) -> Coeffs:
    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    def coeffs(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([kernel(ratio + 1), kernel(ratio), kernel(1 - ratio),
                             kernel(2 - ratio)])
        s = min(scale, 1.0)
        start = int(np.floor(-2 / s) + 1)
        c = np.array([kernel(s * (i - ratio)) for i in range(start, 2 - start)])
        return c / c.sum()

    return coeffs


def _source_coords(ctm: str, m: int, n: int, scale: float, roi: tuple[float, float]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Source coordinate of every output index and, for tf_crop_and_resize, extrapolated rows."""
    y = np.arange(m, dtype=np.float64)
    out_w = scale * n
    if ctm == "align_corners":
        return (np.zeros(m) if out_w == 1 else y * (n - 1) / (out_w - 1)), None
    if ctm == "asymmetric":
        return y / scale, None
    if ctm == "tf_crop_and_resize":
        x = (np.full(m, (roi[1] - roi[0]) * (n - 1) / 2) if out_w == 1
             else y * (roi[1] - roi[0]) * (n - 1) / (out_w - 1))
        x = x + roi[0] * (n - 1)
        return x, (x < 0) | (x > n - 1)
    if ctm == "pytorch_half_pixel":
        return (np.full(m, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5), None
    if ctm == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if ctm == "half_pixel_symmetric":
        offset = n / 2 * (1 - m / out_w)
        return offset + (y + 0.5) / scale - 0.5, None
    raise ValueError(f"unknown coordinate_transformation_mode {ctm!r}")


def axis_weights(n: int, m: int, scale: float, coeffs: Coeffs, ctm: str,
                 exclude_outside: bool, roi: tuple[float, float] = (0.0, 1.0)
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """The (m, n) interpolation matrix of one axis and the rows to extrapolate (or None)."""
    x, extrapolated = _source_coords(ctm, m, n, scale, roi)
    w = np.zeros((m, n))
    for i in range(m):
        base = math.floor(x[i])
        ratio = 1.0 if x[i] == base else x[i] - base
        c = np.asarray(coeffs(float(ratio), scale), dtype=np.float64)
        k = len(c)
        pad = math.ceil(k / 2)
        xp = x[i] + pad
        p = math.floor(xp)
        frac = xp - p
        if k % 2 == 0:
            start = p + (-(k // 2) if frac == 0 else -(k // 2) + 1)
        else:
            start = p + (-((k - 1) // 2) + (0 if frac <= 0.5 else 1))
        idx = np.arange(start, start + k) - pad
        if exclude_outside:
            c = np.where((idx < 0) | (idx >= n), 0.0, c)
            total = c.sum()
            c = c / (total if total else 1.0)
        for j, cj in zip(np.clip(idx, 0, n - 1), c, strict=True):
            w[i, j] += cj
    if extrapolated is not None and not extrapolated.any():
        extrapolated = None
    return w, extrapolated


def _plan(n: NodeCtx, shape: tuple[int, ...]) -> tuple[list[float], list[int], list[float]]:
    """Per-axis scales, output sizes and roi (as the ONNX reference computes them)."""
    r = len(shape)
    axes = n.attr("axes")
    axes = [a % r for a in axes] if axes is not None else list(range(r))
    roi = n.const(1, "roi") if n.has(1) else None
    given_scales = n.const(2, "scales") if n.has(2) else None
    given_sizes = n.const(3, "sizes") if n.has(3) else None
    scales = (None if given_scales is None or given_scales.size == 0
              else [float(v) for v in given_scales])
    sizes = (None if given_sizes is None or given_sizes.size == 0
             else [int(v) for v in given_sizes])
    full_roi = [0.0] * r + [1.0] * r
    if roi is not None and roi.size:
        vals = [float(v) for v in np.asarray(roi).reshape(-1)]
        k = len(vals) // 2
        src = axes if k == len(axes) else list(range(r))
        for i, a in enumerate(src):
            full_roi[a], full_roi[a + r] = vals[i], vals[i + k]
    if sizes is not None:
        out = list(shape)
        for i, a in enumerate(axes):
            out[a] = sizes[i]
        sc = [out[i] / shape[i] for i in range(r)]
        policy = n.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            s = pick(sc[a] for a in axes)
            sc = [s if i in axes else 1.0 for i in range(r)]
            out = [int(s * shape[i] + 0.5) if i in axes else shape[i] for i in range(r)]
    elif scales is not None:
        sc = [1.0] * r
        for i, a in enumerate(axes):
            sc[a] = scales[i]
        out = [int(s * d) for s, d in zip(sc, shape, strict=True)]
    else:
        raise n.error("Resize needs scales or sizes")
    return sc, out, full_roi


@handles("Resize")
def _resize(n: NodeCtx) -> Value:
    x = n.x(0)
    shape = n.static_shape(x, "Resize")
    r = len(shape)
    mode = n.attr("mode", "nearest")
    ctm = n.attr("coordinate_transformation_mode", "half_pixel")
    antialias = bool(n.attr("antialias", 0))
    coeffs = (_nearest(n.attr("nearest_mode", "round_prefer_floor")) if mode == "nearest" else
              _linear(antialias) if mode == "linear" else
              _cubic(n.attr("cubic_coeff_a", -0.75), antialias))
    extrapolation = float(n.attr("extrapolation_value", 0.0))
    scales, out, roi = _plan(n, shape)
    y = x
    for a in range(r):
        trivial_roi = math.isclose(roi[a], 0.0) and math.isclose(roi[a + r], 1.0)
        if math.isclose(scales[a], 1.0) and out[a] == shape[a] and (
                trivial_roi or ctm != "tf_crop_and_resize"):
            continue
        w, extra = axis_weights(shape[a], out[a], scales[a], coeffs, ctm,
                                bool(n.attr("exclude_outside", 0)), (roi[a], roi[a + r]))
        y = _apply(n, y, a, w, mode == "nearest")
        if extra is not None:
            mask = extra.reshape([out[a]] + [1] * (r - a - 1))
            y = n.emit(ops.where, n.constant(mask), n.scalar(extrapolation, y), y)
    return y


def _apply(n: NodeCtx, x: Value, axis: int, w: np.ndarray, nearest: bool) -> Value:
    """Interpolate ``x`` along ``axis`` with the (out, in) matrix ``w``."""
    if nearest:
        return n.emit(ops.gather, x, n.constant(w.argmax(axis=1), "int64"), axis=axis)
    if not x.dtype.is_float:
        raise n.unsupported(f"linear/cubic Resize of {x.dtype.name} data")
    r = x.ndim
    if axis == r - 1:
        return n.emit(ops.matmul, x, n.constant(w.T, x.dtype))
    perm: Any = (*[i for i in range(r) if i != axis], axis)
    inv = tuple(int(i) for i in np.argsort(perm))
    t = n.emit(ops.transpose, x, perm=perm)
    t = n.emit(ops.matmul, t, n.constant(w.T, x.dtype))
    return n.emit(ops.transpose, t, perm=inv)
