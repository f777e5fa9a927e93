"""ONNX lowering of ``batch_norm_train``: one BatchNormalization with ``training_mode=1``.

With momentum 0 its running-statistics outputs are the batch mean and the biased batch variance
(``input * 0 + batch * 1``), which are our ``mean`` and ``var`` outputs; the input statistics it
blends them with are zeros and ones of the channel count (the scale where that is symbolic).
"""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []


@LOWERINGS.register(ops.batch_norm_train)
def _batch_norm_train_onnx(b: OnnxBuilder, x: str, scale: str, bias: str, *,
                           epsilon: float) -> tuple[str, ...]:
    xt = b.in_type(0)
    c = xt.shape[1]
    if isinstance(c, int):
        zeros = b.constant(np.zeros(c), xt.dtype, name="mean0")
        ones = b.constant(np.ones(c), xt.dtype, name="var0")
    else:  # momentum 0 multiplies them by zero: any finite (C,) tensor serves
        zeros = ones = scale
    return b.op_n("BatchNormalization", 3, x, scale, bias, zeros, ones, dtype=xt.dtype,
                  back=(0, 1, 2), epsilon=epsilon, momentum=0.0, training_mode=1)
