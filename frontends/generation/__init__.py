"""Text generation (a tool layer over the DSL): prefill/decode graphs with a KV cache,
runners on NumPy and ONNX Runtime, sampling, ``generate`` and byte-level BPE tokenizers."""

from __future__ import annotations

from .generate import Generation, as_runner, generate, prepare_prompts
from .graphs import GenerationGraphs, trace_generation, trace_recompute
from .runners import KVRunner, RecomputeRunner, StepRunner, ort_kv_runner
from .sampling import SamplingConfig, choose

__all__ = [
    "Generation",
    "GenerationGraphs",
    "KVRunner",
    "RecomputeRunner",
    "SamplingConfig",
    "StepRunner",
    "as_runner",
    "choose",
    "generate",
    "ort_kv_runner",
    "prepare_prompts",
    "trace_generation",
    "trace_recompute",
]
