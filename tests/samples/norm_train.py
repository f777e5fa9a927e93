"""Samples of ``batch_norm_train`` (batch statistics); the oracle is a float64 NumPy formula."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from tests.op_db import Arrays, OpSample
from tests.op_db import tol as _tol

__all__ = ["SAMPLES"]

F32 = np.float32
F64 = np.float64


def _inputs(x: tuple[int, ...], dt: type, shift: float) -> Callable[[np.random.Generator], Arrays]:
    def make(rng: np.random.Generator) -> Arrays:
        c = x[1]
        return [(rng.standard_normal(x) * 2.0 + shift).astype(dt),
                rng.standard_normal(c).astype(dt), rng.standard_normal(c).astype(dt)]

    return make


def _reference(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, *,
               epsilon: float = 1e-5) -> tuple[np.ndarray, ...]:
    axes = (0, *range(2, x.ndim))
    shape = (-1, *(1,) * (x.ndim - 2))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes)
    var = x64.var(axis=axes)
    y = (x64 - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
    y = y * scale.reshape(shape) + bias.reshape(shape)
    return tuple(v.astype(x.dtype) for v in (y, mean, var))


def _sample(label: str, x: tuple[int, ...], dt: type = F32, shift: float = 0.0,
            **attrs: float) -> OpSample:
    return OpSample(ops.batch_norm_train, _inputs(x, dt, shift), attrs=dict(attrs), label=label,
                    reference=_reference, **_tol(dt))


SAMPLES: list[OpSample] = [
    _sample("2d", (4, 3, 4, 5)),
    _sample("nc", (6, 4), epsilon=1e-3),
    _sample("1d_f64", (3, 3, 7), F64, epsilon=0.125),
    _sample("3d_shifted", (2, 2, 3, 2, 4), shift=5.0),
]
