"""Transformers exported by the TorchScript exporter (opset 17) with dynamic batch and
sequence axes import and match ONNX Runtime at several sizes on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from .hf_exports import check_dynamic, export, seq_axis_dynamic


@pytest.mark.parametrize("family", ["gpt2", "bert", "t5_encoder", "t5", "whisper_encoder",
                                    "vit", "llama"])
def test_legacy_dynamic_export_imports_and_matches_ort(family: str, tmp_path: Path) -> None:
    path = tmp_path / f"{family}.onnx"
    feeds = export(family, "legacy", path)
    err = check_dynamic(path, feeds, seq_dynamic=seq_axis_dynamic(family))
    assert err < 1e-5, f"{family}: max abs difference {err} from ORT"
