"""ONNX import: ``import_onnx(model_or_path) -> Graph``.

Standard ONNX ops (opsets 13-26; older models are converted with ``onnx.version_converter``)
map onto the IR's ops; constant operands become attributes and constant subgraphs are folded.
Unsupported ops and features are all reported at once in an :class:`OnnxUnsupportedError`.
"""

from __future__ import annotations

from .context import HANDLERS, OnnxFeatureError, OnnxUnsupportedError
from .importer import import_onnx
from .loader import UnsupportedDType, load_model


def supported_ops() -> list[str]:
    """The ONNX op types the importer maps (``Domain::Op`` for non-default domains)."""
    return sorted(HANDLERS)


__all__ = [
    "OnnxFeatureError",
    "OnnxUnsupportedError",
    "UnsupportedDType",
    "import_onnx",
    "load_model",
    "supported_ops",
]
