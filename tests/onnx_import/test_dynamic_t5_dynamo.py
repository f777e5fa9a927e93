"""T5 (encoder, and encoder-decoder) exported by the dynamo exporter with dynamic batch and
sequence axes imports and matches ONNX Runtime (a file of its own: T5's export is slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxscript")  # the dynamo exporter needs it

from .hf_exports import check_dynamic, export


def test_t5_encoder_dynamo_export_imports_and_matches_ort(tmp_path: Path) -> None:
    path = tmp_path / "t5_encoder.onnx"
    feeds = export("t5_encoder", "dynamo", path)
    err = check_dynamic(path, feeds)
    assert err < 1e-5, f"max abs difference {err} from ORT"
