"""NumPy kernels for the fused ops linear, fused_conv and attention, and the in-place
activations and scratch buffers they share with ``fused_elementwise`` (in ``fused_program``).

Each kernel computes what its decomposition computes, with fewer temporaries: the result buffer
is allocated once (``np.matmul(..., out=)`` or a fresh convolution output) and the epilogue
(bias, residual, activation, softmax) runs in place on it; temporaries live in per-thread
scratch buffers reused from call to call. Narrow floats (float16, bfloat16, ...) take the plain
path: the same formulas on fresh arrays.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from lbdl_graph import ops

from . import KERNELS
from .nn import _conv_kernel, _geometry, _windows

__all__: list[str] = []

Array = np.ndarray
Ints = tuple[int, ...]
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)

# ---------------------------------------------------------------------------------- scratch space

_SCRATCH = threading.local()
_SCRATCH_MAX = 1 << 22  # elements kept per slot, dtype and thread; larger ones are not kept


def _scratch(shape: tuple[int, ...], dt: np.dtype[Any], slot: int = 0) -> Array:
    """A per-thread temporary of this shape, reused across calls (one buffer per slot and
    dtype): fresh big arrays cost page faults that can take longer than the arithmetic done in
    them. Never returned to callers."""
    n = math.prod(shape)
    if n > _SCRATCH_MAX:
        return np.empty(shape, dt)
    key = f"{dt.char}{slot}"
    buf = getattr(_SCRATCH, key, None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1 << 12), dt)
        setattr(_SCRATCH, key, buf)
    return buf[:n].reshape(shape)


# ------------------------------------------------------------------------ in-place activations


def _gelu_tanh_(y: Array) -> None:
    """y <- 0.5 y (1 + tanh(sqrt(2/pi) y (1 + 0.044715 y^2))) in place."""
    t = np.multiply(y, y, out=_scratch(y.shape, y.dtype))
    t *= _SQRT_2_OVER_PI * 0.044715
    t += _SQRT_2_OVER_PI
    t *= y
    np.tanh(t, out=t)
    t += 1.0
    y *= 0.5
    y *= t


# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0: relative error < 1.2e-7 everywhere
# (Numerical Recipes' erfcc, a Chebyshev fit); P's coefficients from the constant term up
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
         1.48851587, -0.82215223, 0.17087277)


def _gelu_erf_(y: Array) -> None:
    """y <- 0.5 y (1 + erf(y / sqrt(2))) in place. In float32, 1 + erf(z) is erfc(|z|) for
    z < 0 and 2 - erfc(|z|) otherwise, from a float32-accurate erfc made of ufuncs (SciPy's
    float32 erf is a scalar loop, several times slower than the whole formula)."""
    if y.dtype != np.float32:
        t = np.multiply(y, _SQRT_HALF, out=_scratch(y.shape, y.dtype))
        special.erf(t, out=t)
        t += 1.0
        y *= 0.5
        y *= t
        return
    a = np.abs(y, out=_scratch(y.shape, y.dtype))
    a *= _SQRT_HALF
    t = np.multiply(a, 0.5, out=_scratch(y.shape, y.dtype, slot=1))
    t += 1.0
    np.reciprocal(t, out=t)
    u = np.multiply(t, _ERFC[-1], out=_scratch(y.shape, y.dtype, slot=2))
    for c in _ERFC[-2:0:-1]:
        u += c
        u *= t
    u += _ERFC[0]
    a *= a
    u -= a
    np.exp(u, out=u)
    u *= t  # erfc(|z|)
    # u + [y >= 0] (2 - 2u): arithmetic, as masked copies mispredict on random signs
    np.multiply(u, -2.0, out=t)
    t += 2.0
    t *= y >= 0
    u += t
    y *= 0.5
    y *= u


def _relu_(y: Array) -> None:
    np.maximum(y, 0, out=y)


def _sigmoid_(y: Array) -> None:
    """y <- 1 / (1 + exp(-y)) in place (exp's overflow to inf gives the right limit, 0)."""
    np.negative(y, out=y)
    np.exp(y, out=y)
    y += 1.0
    np.reciprocal(y, out=y)


_ACTIVATE_: dict[str, Callable[[Array], None]] = {
    "relu": _relu_, "gelu": _gelu_erf_, "gelu_tanh": _gelu_tanh_}


def _activate(y: Array, activation: str) -> Array:
    """Apply an activation to a fresh array: in place for float32/64, else via the kernels."""
    if activation == "none":
        return y
    if y.dtype in _NATIVE:
        _ACTIVATE_[activation](y)
        return y
    if activation == "relu":
        return np.asarray(KERNELS[ops.relu](y))
    approximate = "tanh" if activation == "gelu_tanh" else "none"
    return np.asarray(KERNELS[ops.gelu](y, approximate=approximate))


# ---------------------------------------------------------------------------------------- linear


@KERNELS.register(ops.linear)
def _linear_kernel(x: Array, w: Array, b: Array | None = None, *, activation: str) -> Array:
    """activation(x @ w + b): one GEMM over all rows into a fresh buffer, epilogue in place."""
    k, n = w.shape
    if x.dtype not in _NATIVE or w.dtype != x.dtype or k == 0:
        y = np.asarray(np.matmul(x, w))
        return _activate(y + b if b is not None else y, activation)
    rows = x.reshape(-1, k)
    y = np.empty((rows.shape[0], n), dtype=x.dtype)
    np.matmul(rows, w, out=y)
    if b is not None:
        y += b
    _activate(y, activation)
    return y.reshape(*x.shape[:-1], n)


# ------------------------------------------------------------------------------------ fused_conv


def _padded(x: Array, pb: Ints, pe: Ints, tail: int) -> Array:
    """``x`` zero-padded into a scratch buffer followed by ``tail`` spare elements."""
    dims = tuple(a + p + q for a, p, q in zip(x.shape[2:], pb, pe, strict=True))
    n = x.shape[0] * x.shape[1] * math.prod(dims)
    flat = _scratch((n + tail,), x.dtype, slot=1)
    flat[n:] = 0  # read only into the cropped columns, but keep them finite
    xp = flat[:n].reshape(*x.shape[:2], *dims)
    if any(pb) or any(pe):
        xp.fill(0)
    inner = (slice(None), slice(None), *(slice(p, p + a) for p, a in zip(pb, x.shape[2:],
                                                                         strict=True)))
    xp[inner] = x
    return xp


def _im2col(x: Array, kernel: Ints, group: int, strides: Ints | None, pads: Ints | None,
            dilations: Ints | None) -> tuple[Array, Ints, Ints]:
    """The patches of ``x`` as (N, G, C/G * K, L), L output positions, in a scratch buffer;
    returns them, the output dims and the dims L spans (to crop to the output dims).

    A 1x1 convolution with stride 1 and no padding is a view of ``x``. Other stride-1
    convolutions take each tap as one contiguous run of the flattened padded input, covering
    whole padded rows (the columns past the output's are cropped later): runs copy an order of
    magnitude faster than windows gathered pixel by pixel. Strided ones gather the windows."""
    k = len(kernel)
    s, pb, pe, d = _geometry(k, strides, pads, dilations)
    n, c = x.shape[:2]
    cg = c // group
    if all(v == 1 for v in (*kernel, *s)) and not any(pb) and not any(pe):
        return x.reshape(n, group, cg, -1), x.shape[2:], x.shape[2:]
    if all(v == 1 for v in s):
        dims = tuple(a + p + q for a, p, q in zip(x.shape[2:], pb, pe, strict=True))
        out = tuple(p - di * (ki - 1) for p, di, ki in zip(dims, d, kernel, strict=True))
        row = [math.prod(dims[i + 1:]) for i in range(k)]  # element stride of each axis
        span = (out[0], *dims[1:])
        tail = sum((ki - 1) * di * r for ki, di, r in zip(kernel[1:], d[1:], row[1:],
                                                          strict=True))
        xp = _padded(x, pb, pe, tail)
        it = x.itemsize
        taps = np.lib.stride_tricks.as_strided(
            xp, (n, group, cg, *kernel, math.prod(span)),
            (c * math.prod(dims) * it, cg * math.prod(dims) * it, math.prod(dims) * it,
             *(di * r * it for di, r in zip(d, row, strict=True)), it), writeable=False)
        cols = _scratch(taps.shape, x.dtype)
        np.copyto(cols, taps)
        return cols.reshape(n, group, cg * math.prod(kernel), -1), out, span
    xp = _padded(x, pb, pe, 0) if any(pb) or any(pe) else x
    win = _windows(xp, kernel, s, d)
    out = win.shape[2:2 + k]
    win = win.reshape(n, group, cg, *out, *kernel)
    cols = _scratch((n, group, cg, *kernel, *out), x.dtype)
    np.copyto(cols, win.transpose(0, 1, 2, *range(3 + k, 3 + 2 * k), *range(3, 3 + k)))
    return cols.reshape(n, group, cg * math.prod(kernel), -1), out, out


@KERNELS.register(ops.fused_conv)
def _fused_conv_kernel(x: Array, w: Array, b: Array | None = None, residual: Array | None = None,
                       *, strides: Ints | None, pads: Ints | None, dilations: Ints | None,
                       group: int, activation: str) -> Array:
    """activation(conv(x, w, b) + residual): im2col into a reused scratch buffer, one batched
    matmul, then the bias add writes the (cropped) result into a fresh array and the residual
    and relu run in place on it."""
    if x.dtype not in _NATIVE:
        y = _conv_kernel(x, w, b, strides=strides, pads=pads, dilations=dilations, group=group)
    else:
        cols, out, span = _im2col(x, w.shape[2:], group, strides, pads, dilations)
        n, m = x.shape[0], w.shape[0]
        full = np.matmul(w.reshape(group, m // group, -1), cols,
                         out=_scratch((n, group, m // group, cols.shape[-1]), x.dtype, slot=2))
        valid = (slice(None), slice(None), *(slice(0, o) for o in out))
        full = full.reshape(n, m, *span)[valid]
        y = np.empty((n, m, *out), x.dtype)
        if b is not None:
            np.add(full, b.reshape(m, *(1,) * len(out)), out=y)
        else:
            np.copyto(y, full)
    if residual is not None:
        y += residual
    return _activate(y, activation)


# ------------------------------------------------------------------------------------- attention


@functools.lru_cache(maxsize=64)
def _causal_factor(lq: int, lk: int, dt: np.dtype[Any]) -> Array:
    """(lq, lk) of dtype ``dt``: 1 where key j <= query i, else 0."""
    keep = np.tril(np.ones((lq, lk), dtype=dt))
    keep.flags.writeable = False
    return keep


def _exp_limit(dt: np.dtype[Any], lk: int) -> float:
    """The largest score whose exp, summed ``lk`` times, stays finite."""
    return (80.0 if dt == np.float32 else 700.0) - math.log(max(lk, 1))


@KERNELS.register(ops.attention)
def _attention_kernel(q: Array, k: Array, v: Array, mask: Array | None = None, *,
                      scale: float | None, causal: bool) -> Array:
    """softmax(q k^T * scale + mask) v: one batched matmul for the scores (in a reused scratch
    buffer), exp in place, one matmul with v; the row sums come from a matmul with ones and
    divide the (smaller) output.

    Softmax is shift-invariant; the usual per-row max shift is skipped when the largest score
    cannot overflow exp and every row keeps a normal-sized sum (the common case, checked);
    otherwise the scores are recomputed and shifted row by row."""
    if q.dtype not in _NATIVE:  # narrow floats: compute in float32, round once
        f32 = [a.astype(np.float32) if a is not None else None for a in (q, k, v, mask)]
        return _attention_kernel(*f32, scale=scale, causal=causal).astype(q.dtype)
    c = q.dtype.type(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    kt = np.swapaxes(k, -1, -2)
    shape = (*np.broadcast_shapes(q.shape[:-2], k.shape[:-2]), q.shape[-2], k.shape[-2])
    s = np.matmul(q, kt, out=_scratch(shape, q.dtype))
    s *= c
    if mask is not None:
        s += mask
    lq, lk = shape[-2:]
    if s.size == 0:
        return np.asarray(np.matmul(s, v))
    if s.max() <= _exp_limit(s.dtype, lk):  # NaN compares False
        np.exp(s, out=s)
        if causal:
            s *= _causal_factor(lq, lk, s.dtype)
        total = np.matmul(s, np.ones((lk, 1), s.dtype))
        tiny = 1e-20 if s.dtype == np.float32 else 1e-200
        if total.size == 0 or total.min() >= tiny:
            out = np.asarray(np.matmul(s, v))
            out /= total
            return out
        s = np.matmul(q, kt, out=s)  # some row has only tiny weights: start again, shifted
        s *= c
        if mask is not None:
            s += mask
    if causal:
        np.copyto(s, -np.inf, where=_causal_factor(lq, lk, s.dtype) == 0)
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)
    out = np.asarray(np.matmul(s, v))
    out /= total
    return out
