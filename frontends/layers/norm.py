"""Normalising layers (book section 4.6): BatchNorm1d, BatchNorm2d, LayerNorm.

In training mode BatchNorm normalises with batch statistics and the trace records the next
``running_mean``, ``running_var`` and ``num_batches_tracked`` as ``<buffer>:next`` outputs;
in eval mode it is a single ``batch_norm`` node on the running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from .. import functional as F
from ..context import current_state
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, as_tensor, error
from ._util import check_int, layer_error

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm"]


class _BatchNorm(Module):
    _ranks: tuple[int, ...] = (4,)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features)
        if eps <= 0:
            raise layer_error(name, f"eps must be positive, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise layer_error(name, f"momentum must be in [0, 1] or None, got {momentum}")
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=np.float32))
            self.bias = Parameter(np.zeros(c, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=np.float32))
            self.register_buffer("running_var", np.ones(c, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` per channel (dim 1)."""
        t = as_tensor(x)
        if t.ndim not in self._ranks:
            ranks = " or ".join(str(r) for r in self._ranks)
            raise error(ShapeError, f"{type(self).__name__} expects a rank-{ranks} input, got "
                        f"{t.type}")
        factor: Any = self.momentum
        if self.training and self.track_running_stats:
            nbt = self.num_batches_tracked + 1
            current_state().record_update(self.num_batches_tracked, nbt.value)
            if self.momentum is None:  # cumulative moving average, as in PyTorch
                factor = Tensor(ops.reciprocal(nbt.to(t.dtype).value))
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(t, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch, momentum=factor, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs."""

    _ranks = (4,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift
    (weight ones, bias zeros)."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
            normalized_shape)
        self.normalized_shape = tuple(check_int("LayerNorm", "normalized_shape", d)
                                      for d in shape)
        if not self.normalized_shape:
            raise layer_error("LayerNorm", "normalized_shape must not be empty")
        if eps <= 0:
            raise layer_error("LayerNorm", f"eps must be positive, got {eps}")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=np.float32))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype=np.float32))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x``."""
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
