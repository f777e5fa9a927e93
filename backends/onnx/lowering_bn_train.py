"""ONNX lowering of ``batch_norm_train``: one BatchNormalization with ``training_mode=1``.

With momentum 0 its running-statistics outputs are the batch mean and the biased batch variance
(``input * 0 + batch * 1``), which are our ``mean`` and ``var`` outputs. ONNX Runtime's CPU
kernel writes those outputs in place over its input statistics, even over initializers and
graph inputs: a zeros initializer (ORT merges equal ones) handed one BatchNorm's mean to the
next of the same width, the scale as input statistic was overwritten. So the input statistics
are two fresh tensors made each run from ``x`` itself, which nothing else reads: ``x[0, :, 0..]
* 0`` and that times 0 again (a distinct node, so ORT's common-subexpression pass keeps two
buffers). A channel whose first element is not finite has a non-finite mean anyway.
"""

from __future__ import annotations

from lbdl_graph import ops

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []


@LOWERINGS.register(ops.batch_norm_train)
def _batch_norm_train_onnx(b: OnnxBuilder, x: str, scale: str, bias: str, *,
                           epsilon: float) -> tuple[str, ...]:
    xt = b.in_type(0)
    dt = xt.dtype
    rank = xt.ndim
    cut = [0, *range(2, rank)]
    first = b.op("Slice", x, b.ints([0] * len(cut), name="starts"),
                 b.ints([1] * len(cut), name="ends"), b.ints(cut, name="axes"))
    row = b.op("Reshape", first, b.ints([-1], name="shape"))  # (C,): x[0, :, 0, ...]
    zero = b.scalar(0.0, dt, name="zero")
    mean0 = b.op("Mul", row, zero, dtype=dt)
    var0 = b.op("Mul", mean0, zero, dtype=dt)
    return b.op_n("BatchNormalization", 3, x, scale, bias, mean0, var0, dtype=dt,
                  back=(0, 1, 2), epsilon=epsilon, momentum=0.0, training_mode=1)
