"""Quantisation passes: llama.cpp block formats, weight-only quantisation, static (QDQ) and
dynamic int8 post-training quantisation, and quantisation-aware training (``prepare_qat``,
``convert_qat``, ``qat_finetune``). Every pass is ``Graph -> PassResult`` and applies to any
traced graph; calibration runs the graph through a caller-supplied ``evaluate`` function, since
passes do not depend on a backend."""

from __future__ import annotations

from .blocks import (
    FORMATS,
    BlockFormat,
    SizeReport,
    block_fields,
    dequantize_blocks,
    pack_nibbles_ort,
    quantize_blocks,
    size_report,
)
from .calibrate import METHODS, Evaluate, Observer, calibrate, check_batches, entropy_threshold
from .qat import WEIGHT_SCHEMES, convert_qat, prepare_qat, qat_weights
from .qat_train import QatResult, StepRunner, add_loss, qat_finetune
from .static import (
    StaticPlan,
    activation_qparams,
    plan_static,
    qdq_pair,
    quantize_dynamic,
    quantize_static,
    rewrite_static,
)
from .weights import SCHEMES, int8_weight, quantize_weights, symmetric_int8

__all__ = [
    "FORMATS",
    "METHODS",
    "SCHEMES",
    "WEIGHT_SCHEMES",
    "BlockFormat",
    "Evaluate",
    "Observer",
    "QatResult",
    "SizeReport",
    "StaticPlan",
    "StepRunner",
    "activation_qparams",
    "add_loss",
    "block_fields",
    "calibrate",
    "check_batches",
    "convert_qat",
    "dequantize_blocks",
    "entropy_threshold",
    "int8_weight",
    "pack_nibbles_ort",
    "plan_static",
    "prepare_qat",
    "qat_finetune",
    "qat_weights",
    "qdq_pair",
    "quantize_blocks",
    "quantize_dynamic",
    "quantize_static",
    "quantize_weights",
    "rewrite_static",
    "size_report",
    "symmetric_int8",
]
