"""VJP rule of fake_quantize (quantisation-aware training).

The rounding has a zero derivative almost everywhere, so the rule is the straight-through
estimator: x gets the cotangent inside the clipping range and nothing outside. Scale and zero
point get the learnable-quantisation gradients of torch's ``_fake_quantize_learnable_*``
(LSQ+): the driver sums them to per-tensor or per-channel shapes.
"""

from __future__ import annotations

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .helpers import scalar
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


@VJPS.register(ops.fake_quantize)
def _fake_quantize_vjp(g: Value, out: Value, x: Value, scale: Value, zero_point: Value, *,
                       qmin: int, qmax: int) -> Grads:
    # y = (clip(round(x/s) + z, qmin, qmax) - z) s, round' := 1 inside the range:
    # dy = [inside] dx + ([inside] (y - x)/s + [below] (qmin - z) + [above] (qmax - z)) ds
    #      - [outside] s dz
    code = ops.add(ops.round_(ops.div(x, scale)), zero_point)
    below = ops.less(code, scalar(qmin, x))
    above = ops.greater(code, scalar(qmax, x))
    inside = ops.logical_not(ops.logical_or(below, above))
    zero = scalar(0.0, g)
    g_x = ops.where(inside, g, zero)
    edge = ops.where(below, ops.sub(scalar(qmin, x), zero_point),
                     ops.sub(scalar(qmax, x), zero_point))
    d_scale = ops.where(inside, ops.div(ops.sub(out, x), scale), edge)
    g_zp = ops.where(inside, zero, ops.neg(ops.mul(g, scale)))
    return (g_x, ops.mul(g, d_scale), g_zp)
