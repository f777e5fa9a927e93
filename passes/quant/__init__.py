"""Quantisation passes: llama.cpp block formats, weight-only quantisation, static (QDQ) and
dynamic int8 post-training quantisation. Every pass is ``Graph -> PassResult`` and applies to any
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
from .static import activation_qparams, quantize_dynamic, quantize_static
from .weights import SCHEMES, int8_weight, quantize_weights, symmetric_int8

__all__ = [
    "FORMATS",
    "METHODS",
    "SCHEMES",
    "BlockFormat",
    "Evaluate",
    "Observer",
    "SizeReport",
    "activation_qparams",
    "block_fields",
    "calibrate",
    "check_batches",
    "dequantize_blocks",
    "entropy_threshold",
    "int8_weight",
    "pack_nibbles_ort",
    "quantize_blocks",
    "quantize_dynamic",
    "quantize_static",
    "quantize_weights",
    "size_report",
    "symmetric_int8",
]
