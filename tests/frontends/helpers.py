"""Shared helpers of the frontend tests: trace-and-run, and independent NumPy references."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import InputSpec, trace

RNG = np.random.default_rng(1234)


def rand(*shape: int, seed: int | None = None) -> np.ndarray:
    """Standard-normal float32 data."""
    gen = RNG if seed is None else np.random.default_rng(seed)
    return gen.standard_normal(shape).astype(np.float32)


def run_model(model: Any, *arrays: np.ndarray, training: bool | None = None,
              rng_key: Sequence[int] | None = None, symbolic: bool = False) -> Any:
    """Trace ``model`` on the arrays' shapes (batch dim symbolic if asked), run it on NumPy and
    return the outputs (a single array when there is one output)."""
    specs = []
    for i, a in enumerate(arrays):
        shape: tuple[Any, ...] = a.shape
        if symbolic:
            shape = ("N", *a.shape[1:])
        specs.append(InputSpec(shape, a.dtype, f"in{i}"))
    g = trace(model, specs, training=training)
    feeds = {f"in{i}": a for i, a in enumerate(arrays)}
    if "rng_input" in g.metadata:
        feeds["rng_key"] = np.asarray(rng_key or (0, 0), dtype=np.int64)
    out = run(g, feeds)
    return out["output"] if list(out) == ["output"] else out


def conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Sequence[int],
             pad: Sequence[int], dilation: Sequence[int], groups: int) -> np.ndarray:
    """Direct N-d cross-correlation by explicit loops over output positions and taps."""
    k = w.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    n, c = x.shape[:2]
    m = w.shape[0]
    kern = w.shape[2:]
    out_sp = [(xp.shape[2 + i] - dilation[i] * (kern[i] - 1) - 1) // stride[i] + 1
              for i in range(k)]
    out = np.zeros((n, m, *out_sp), dtype=np.float64)
    cg, mg = c // groups, m // groups
    for o in np.ndindex(*out_sp):
        for t in np.ndindex(*kern):
            idx = tuple(o[i] * stride[i] + t[i] * dilation[i] for i in range(k))
            patch = xp[(slice(None), slice(None), *idx)]  # (n, c)
            for g in range(groups):
                wt = w[(slice(g * mg, (g + 1) * mg), slice(None), *t)]  # (mg, cg)
                out[(slice(None), slice(g * mg, (g + 1) * mg), *o)] += \
                    patch[:, g * cg:(g + 1) * cg] @ wt.T
    if b is not None:
        out += b.reshape((1, m) + (1,) * k)
    return out.astype(np.float32)


def conv_transpose_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                       stride: Sequence[int], pad: Sequence[int], out_pad: Sequence[int],
                       dilation: Sequence[int], groups: int) -> np.ndarray:
    """Transposed convolution as a scatter: input pixel i adds x[i]*w[t] at i*s + t*d - p."""
    k = w.ndim - 2
    n, c = x.shape[:2]
    cg = c // groups
    mg = w.shape[1]
    kern = w.shape[2:]
    full = [(x.shape[2 + i] - 1) * stride[i] + dilation[i] * (kern[i] - 1) + 1 + out_pad[i]
            for i in range(k)]
    out = np.zeros((n, mg * groups, *full), dtype=np.float64)
    for i in np.ndindex(*x.shape[2:]):
        for t in np.ndindex(*kern):
            pos = tuple(i[d] * stride[d] + t[d] * dilation[d] for d in range(k))
            for g in range(groups):
                xs = x[(slice(None), slice(g * cg, (g + 1) * cg), *i)]  # (n, cg)
                wt = w[(slice(g * cg, (g + 1) * cg), slice(None), *t)]  # (cg, mg)
                out[(slice(None), slice(g * mg, (g + 1) * mg), *pos)] += xs @ wt
    crop = tuple(slice(pad[d], full[d] - pad[d]) for d in range(k))
    out = out[(slice(None), slice(None), *crop)]
    if b is not None:
        out += b.reshape((1, -1) + (1,) * k)
    return out.astype(np.float32)


def softmax_ref(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid_ref(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def gelu_ref(x: np.ndarray) -> np.ndarray:
    """Exact GELU via math.erf."""
    erf = np.vectorize(math.erf)
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)
