"""Training-mode batch normalisation as one op: ``batch_norm_train``.

``batch_norm_train(x, scale, bias) -> (y, mean, var)`` normalises each channel (axis 1) of an
(N, C, ...) tensor with the statistics of the batch: ``mean`` and the biased ``var`` over every
axis but 1 (shape (C,)), ``y = (x - mean) / sqrt(var + epsilon) * scale + bias``. It is what
``F.batch_norm(..., training=True)`` traces; ONNX's BatchNormalization with ``training_mode=1``
(momentum 0) computes the same three outputs, and the VJP (``passes/autodiff/rules_bn_train.py``)
is the closed-form backward instead of the autodiff of the composite.
"""

from __future__ import annotations

from ..errors import ShapeError
from ..opdef import Attr, Trait, defop
from ..types import TensorType
from ._rules import require, same_dtype

__all__ = ["batch_norm_train"]


def _batch_norm_train_rule(x: TensorType, scale: TensorType, bias: TensorType, *,
                           epsilon: float) -> tuple[TensorType, TensorType, TensorType]:
    same_dtype(x, scale, bias)
    require(x, "input", kinds=("float",))
    if x.ndim < 2:
        raise ShapeError(f"batch_norm_train needs (N, C, ...) input, got {x}")
    c = x.shape[1]
    for name, t in (("scale", scale), ("bias", bias)):
        if t.ndim != 1 or (isinstance(c, int) and isinstance(t.shape[0], int)
                           and t.shape[0] != c):
            raise ShapeError(f"batch_norm_train: {name} {t} should have shape [{c}] for "
                             f"input {x}")
    stat = x.with_shape((c,))
    return x, stat, stat


batch_norm_train = defop(
    "batch_norm_train", ("x", "scale", "bias"), infer=_batch_norm_train_rule,
    attrs=(Attr("epsilon", "float", 1e-5),), outputs=3, traits=(Trait.DIFFERENTIABLE,),
    onnx="BatchNormalization",
    doc="batch norm with the batch's statistics; outputs (y, mean, biased var)")
