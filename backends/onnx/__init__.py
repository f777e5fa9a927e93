"""ONNX export (a lowering table per op) and the ONNX Runtime runners."""

from __future__ import annotations

from .export import (
    DEFAULT_OPSET,
    Exported,
    export_graph,
    load_onnx_model,
    save_onnx,
    to_onnx,
)
from .lowering import LOWERINGS, OnnxBuilder
from .multi import save_onnx_models
from .runner import OrtRunner, cuda_available, run_onnxruntime
from .stateful import OrtStatefulRunner

__all__ = [
    "DEFAULT_OPSET",
    "LOWERINGS",
    "Exported",
    "OnnxBuilder",
    "OrtRunner",
    "OrtStatefulRunner",
    "cuda_available",
    "export_graph",
    "load_onnx_model",
    "run_onnxruntime",
    "save_onnx",
    "save_onnx_models",
    "to_onnx",
]
