"""VJP of ``batch_norm_train`` (batch statistics) in closed form, with the two reductions once.

With xc = x - mean, r = (var + eps)^-1/2, a = scale r and per-channel means over the N*S
elements of a channel, the input gradient of y = xc r scale + bias is

    x_bar = a (y_bar - mean(y_bar) - xc r^2 mean(y_bar xc))  =  a y_bar + b xc + c,

b = -a r^2 mean(y_bar xc), c = -a mean(y_bar): one product and two sums over the tensor, then
two products and two additions; scale_bar = r sum(y_bar xc) and bias_bar = sum(y_bar) reuse the
sums. Cotangents of the ``mean`` and ``var`` outputs add mean_bar / n to c and 2 var_bar / n to
b (d var / d x = 2 xc / n). The composite's autodiff needs about 30 nodes per layer for the same.
"""

from __future__ import annotations

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .helpers import numel_static, scalar
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


def _inv_count(x: Value) -> Value:
    """1 / (elements per channel) of ``x`` (N, C, *S) as a rank-0 value; a symbolic batch is
    counted from a (N,)-sized slice of ``x``, not from the whole tensor."""
    n = numel_static([x.shape[0], *x.shape[2:]])
    if n is not None:
        return scalar(1.0 / max(n, 1), x)
    rest = numel_static(x.shape[2:])
    if rest is None:  # symbolic spatial dims: count every element of channel 0
        col = ops.slice_(x, starts=(0,), ends=(1,), axes=(1,))
        per = 1
    else:
        col = ops.slice_(x, starts=(0,) * (x.ndim - 1), ends=(1,) * (x.ndim - 1),
                         axes=tuple(range(1, x.ndim)))
        per = rest
    count = ops.reduce_sum(ops.full_like(col, value=1.0), axes=None, keepdims=False)
    out: Value = ops.reciprocal(ops.mul(count, scalar(float(per), x)))
    return out


@VJPS.register(ops.batch_norm_train)
def _batch_norm_train_vjp(g: tuple[Value | None, ...], out: tuple[Value, ...], x: Value,
                          scale: Value, bias: Value, *, epsilon: float) -> Grads:
    gy, g_mean, g_var = g
    _, mean, var = out
    axes = (0, *range(2, x.ndim))

    def pc(v: Value) -> Value:  # (C,) -> broadcastable against (N, C, *S)
        return ops.unsqueeze(v, axes=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else v

    def csum(v: Value) -> Value:
        res: Value = ops.reduce_sum(v, axes=axes, keepdims=False)
        return res

    inv_n = _inv_count(x)
    rstd = ops.reciprocal(ops.sqrt(ops.add(var, scalar(epsilon, var))))
    xc = ops.sub(x, pc(mean))
    b_terms: list[Value] = []
    c_terms: list[Value] = []
    g_scale = g_bias = None
    a = ops.mul(scale, rstd)
    if gy is not None:
        s_g = csum(gy)
        s_gxc = csum(ops.mul(gy, xc))
        g_bias, g_scale = s_g, ops.mul(rstd, s_gxc)
        b_terms.append(ops.neg(ops.mul(ops.mul(a, ops.mul(rstd, rstd)), ops.mul(s_gxc, inv_n))))
        c_terms.append(ops.neg(ops.mul(a, ops.mul(s_g, inv_n))))
    if g_var is not None:
        b_terms.append(ops.mul(g_var, ops.mul(inv_n, scalar(2.0, x))))
    if g_mean is not None:
        c_terms.append(ops.mul(g_mean, inv_n))
    dx: Value | None = ops.mul(gy, pc(a)) if gy is not None else None
    for terms, times in ((b_terms, xc), (c_terms, None)):
        if not terms:
            continue
        coef = terms[0]
        for t in terms[1:]:
            coef = ops.add(coef, t)
        term = ops.mul(times, pc(coef)) if times is not None else pc(coef)
        dx = term if dx is None else ops.add(dx, term)
    if dx is not None and tuple(dx.shape) != tuple(x.shape):
        dx = ops.broadcast_like(dx, x)
    return (dx, g_scale, g_bias)
