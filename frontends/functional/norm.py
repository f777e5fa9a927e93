"""Normalising layers (book section 4.6): batch and layer normalisation.

In training mode batch norm normalises with the batch statistics and, when the running
statistics are module buffers, records their next values in the trace (PyTorch semantics:
``new = (1 - momentum) * old + momentum * stat``, with the unbiased batch variance).

Inside ``with sync_batch_norm():`` a training-mode batch norm takes its statistics over the
batches of every process of a distributed run: the per-channel sum, sum of squares and element
count are packed in one vector and summed by one ``all_reduce`` node, so the mean and variance
are those of the global batch (and the backward pass, through the all-reduce's VJP, sums the
statistics' gradients over the processes too).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from ..context import current_state
from ..parameter import Buffer
from ..tensor import Tensor, as_tensor, error, reduced_count
from ._util import const, float_tensor

__all__ = ["batch_norm", "layer_norm", "sync_batch_norm"]

_SYNC: contextvars.ContextVar[str | None] = contextvars.ContextVar("sync_batch_norm",
                                                                    default=None)


@contextmanager
def sync_batch_norm(group: str = "data") -> Iterator[None]:
    """Trace training-mode batch norms with statistics summed over the processes of ``group``."""
    token = _SYNC.set(group)
    try:
        yield
    finally:
        _SYNC.reset(token)


def _synced_stats(t: Tensor, axes: list[int], group: str) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, biased variance, count) over every process's batch: one all-reduce of
    [sum, sum of squares, count] per channel (the mean and variance keep t's rank)."""
    c = int(t.shape[1])
    n = reduced_count(t, axes)
    count = (const(float(n), t) if isinstance(n, int) else n).reshape(1)
    packed = Tensor(ops.concat(t.sum(axes).value, (t * t).sum(axes).value, count.value, axis=0))
    total = Tensor(ops.all_reduce(packed.value, group=group))
    n_all = total[2 * c]
    mean = total[:c] / n_all
    var = total[c:2 * c] / n_all - mean * mean
    return _channel_shape(t, mean), _channel_shape(t, var), n_all


def _channel_count(t: Tensor) -> int | Tensor:
    """Elements per channel of an (N, C, ...) tensor: an int for static dims, else counted in
    the graph from channel 0 with the static axes cut to length 1 (not from all of ``t``)."""
    axes = [0, *range(2, t.ndim)]
    dims = [t.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return reduced_count(t, axes)
    cut = [a for a in range(1, t.ndim) if a == 1 or isinstance(t.shape[a], int)]
    col = Tensor(ops.slice_(t.value, starts=[0] * len(cut), ends=[1] * len(cut), axes=cut))
    static = int(np.prod([d for d in dims if isinstance(d, int)], dtype=np.int64))
    count = reduced_count(col, axes)
    assert isinstance(count, Tensor)
    return count * const(float(static), t) if static != 1 else count


def _channel_shape(t: Tensor, v: Tensor) -> Tensor:
    return v.reshape([1, v.shape[0]] + [1] * (t.ndim - 2))


def batch_norm(x: Any, running_mean: Any | None, running_var: Any | None,
               weight: Any | None = None, bias: Any | None = None, training: bool = False,
               momentum: float | Tensor | None = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel (dim 1) of an (N, C, ...) tensor.

    Evaluation uses the running statistics (one ``batch_norm`` node). Training uses the batch
    mean and biased variance; if ``running_mean``/``running_var`` are buffers of a module, their
    updated values become ``<buffer>:next`` outputs of the trace (``momentum=None`` skips it).
    """
    t = float_tensor(x, "batch_norm")
    if t.ndim < 2:
        raise error(ShapeError, f"batch_norm expects (N, C, ...) input, got {t.type}")
    c = t.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and tuple(as_tensor(v).shape) != (c,):
            raise error(ShapeError, f"batch_norm: {name} {as_tensor(v).type} does not match the "
                        f"{c} channels of input {t.type}")
    if not training:
        if running_mean is None or running_var is None:
            raise error(ShapeError, "batch_norm in eval mode needs running_mean and running_var")
        rm, rv = as_tensor(running_mean), as_tensor(running_var)
        scale = as_tensor(weight) if weight is not None else Tensor(ops.full_like(rm.value,
                                                                                   value=1.0))
        shift = as_tensor(bias) if bias is not None else Tensor(ops.full_like(rm.value, value=0.0))
        return Tensor(ops.batch_norm(t.value, scale.value, shift.value, rm.value, rv.value,
                                     epsilon=eps))
    axes = [0, *range(2, t.ndim)]
    group = _SYNC.get()
    n: int | Tensor
    if group is None and isinstance(c, int):
        # one batch_norm_train node (y, batch mean, biased var): a closed-form VJP, one ONNX op
        ones = np.ones(c, dtype=t.dtype.numpy)
        scale = as_tensor(weight) if weight is not None else Tensor(ops.constant(value=ones))
        shift = as_tensor(bias) if bias is not None else Tensor(ops.constant(value=ones * 0))
        yv, mv, vv = ops.batch_norm_train(t.value, scale.value, shift.value, epsilon=eps)
        y, mean, var = Tensor(yv), Tensor(mv), Tensor(vv)
        n = _channel_count(t)
    else:
        if group is None:
            mean = t.mean(axes, keepdim=True)
            xc = t - mean
            var = (xc * xc).mean(axes, keepdim=True)
            n = reduced_count(t, axes)
        else:
            mean, var, n = _synced_stats(t, axes, group)
            xc = t - mean
        y = xc * (var + const(eps, t)).rsqrt()
        if weight is not None:
            y = y * _channel_shape(t, as_tensor(weight))
        if bias is not None:
            y = y + _channel_shape(t, as_tensor(bias))
    if momentum is not None:
        if isinstance(n, int):
            unbiased = var.reshape(-1) * const(n / (n - 1) if n > 1 else 1.0, t)
        else:
            unbiased = var.reshape(-1) * n / (n - const(1.0, t))
        for buf, stat in ((running_mean, mean.reshape(-1)), (running_var, unbiased)):
            if isinstance(buf, Buffer):
                m = momentum if isinstance(momentum, Tensor) else const(momentum, t)
                new = buf * (const(1.0, t) - m) + stat * m
                current_state().record_update(buf, new.value)
    return y


def layer_norm(x: Any, normalized_shape: int | Sequence[int], weight: Any | None = None,
               bias: Any | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift."""
    t = float_tensor(x, "layer_norm")
    ns = (int(normalized_shape),) if isinstance(normalized_shape, int | np.integer) else tuple(
        int(d) for d in normalized_shape)
    if len(ns) == 0 or len(ns) > t.ndim or tuple(t.shape[t.ndim - len(ns):]) != ns:
        raise error(ShapeError, f"layer_norm: normalized_shape {ns} does not match the trailing "
                    f"dims of input {t.type}")
    scale = as_tensor(weight) if weight is not None else as_tensor(np.ones(ns), t.dtype)
    b = None if bias is None else as_tensor(bias).value
    return Tensor(ops.layer_norm(t.value, scale.value, b, axis=-len(ns), epsilon=eps))
