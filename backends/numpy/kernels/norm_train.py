"""NumPy kernel of ``batch_norm_train``: batch statistics, then one per-channel affine map."""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops

from . import KERNELS

__all__: list[str] = []


@KERNELS.register(ops.batch_norm_train)
def _batch_norm_train_kernel(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, *,
                             epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, biased var) over every axis but 1 (ONNX BatchNormalization, training_mode=1)."""
    axes = (0, *range(2, x.ndim))
    shape = (-1, *(1,) * (x.ndim - 2))
    mean = x.mean(axis=axes)
    xc = x - mean.reshape(shape)
    var = np.mean(xc * xc, axis=axes)
    mul = (scale / np.sqrt(var + np.asarray(epsilon, x.dtype))).astype(x.dtype)
    y = xc * mul.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype, copy=False), mean.astype(x.dtype), var.astype(x.dtype)
