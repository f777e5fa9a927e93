"""VJP rules of batch_norm, layer_norm and dropout.

``batch_norm`` is the inference form: mean and var are inputs (running statistics), not
statistics of the batch, so the input gradient is a per-channel scale. ``dropout``'s mask is a
pure function of (key, salt, element index), so its VJP is dropout of the cotangent with the
same key and salt.
"""

from __future__ import annotations

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .helpers import scalar
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


@VJPS.register(ops.batch_norm)
def _batch_norm_vjp(g: Value, out: Value, x: Value, scale: Value, bias: Value, mean: Value,
                    var: Value, *, epsilon: float) -> Grads:
    # y = (x - mean) r scale + bias, r = (var + eps)^-1/2:
    # dy = r scale (dx - dmean) + xhat dscale + dbias - xhat scale r^2 / 2 dvar
    spatial = tuple(range(2, x.ndim))

    def per_channel(v: Value) -> Value:
        return ops.unsqueeze(v, axes=tuple(range(1, x.ndim - 1))) if spatial else v

    def channel_sum(v: Value) -> Value:
        out: Value = ops.reduce_sum(v, axes=(0, *spatial), keepdims=False)
        return out

    rstd = ops.reciprocal(ops.sqrt(ops.add(var, scalar(epsilon, var))))
    xhat = ops.mul(ops.sub(x, per_channel(mean)), per_channel(rstd))
    gx = ops.mul(g, per_channel(ops.mul(scale, rstd)))
    g_scale = channel_sum(ops.mul(g, xhat))
    g_mean = ops.neg(channel_sum(gx))
    g_var = ops.mul(g_scale, ops.mul(ops.mul(scale, ops.mul(rstd, rstd)), scalar(-0.5, var)))
    return (gx, g_scale, channel_sum(g), g_mean, g_var)


@VJPS.register(ops.layer_norm)
def _layer_norm_vjp(g: Value, out: Value, x: Value, scale: Value, bias: Value | None, *,
                    axis: int, epsilon: float) -> Grads:
    # xhat = (x - mu) r, y = xhat scale + bias:
    # x_bar = r (gh - mean(gh) - xhat mean(gh xhat)), gh = g scale; scale_bar = g xhat
    axes = tuple(range(axis % x.ndim, x.ndim))

    def mean(v: Value) -> Value:
        out: Value = ops.reduce_mean(v, axes=axes, keepdims=True)
        return out

    xc = ops.sub(x, mean(x))
    rstd = ops.reciprocal(ops.sqrt(ops.add(mean(ops.mul(xc, xc)), scalar(epsilon, x))))
    xhat = ops.mul(xc, rstd)
    gh = ops.mul(g, scale)
    centered = ops.sub(ops.sub(gh, mean(gh)), ops.mul(xhat, mean(ops.mul(gh, xhat))))
    return (ops.mul(rstd, centered), ops.mul(g, xhat), g if bias is not None else None)


@VJPS.register(ops.dropout)
def _dropout_vjp(g: Value, out: Value, x: Value, key: Value, *, ratio: float,
                 salt: int) -> Grads:
    return (ops.dropout(g, key, ratio=ratio, salt=salt), None)  # d(x m / (1-p)) = dx m / (1-p)
