"""Provenance without leaked paths: package- and project-relative source lines, and
``provenance=False`` exports whose map lives in a sidecar the runner reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.onnx import OrtRunner, save_onnx, to_onnx
from lbdl_graph.backends.onnx.provenance import load_sidecar, sidecar_path, strip_provenance
from lbdl_graph.errors import OnnxError
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.graph import Graph
from lbdl_graph.source import display_path

REPO = Path(__file__).resolve().parents[2]


def _affine() -> Graph:
    b = GraphBuilder("affine")
    x = b.input("x", "f32", ["N", "K"])
    w = b.param("w", np.ones((4, 3), np.float32))
    with b, b.scope("proj"):
        y = ops.matmul(x, w)
    return b.build({"y": y})


def _bad_feed() -> dict[str, np.ndarray]:
    return {"x": np.ones((2, 5), np.float32)}  # K=5 does not fit w's 4 rows


def test_package_frames_read_relative_to_the_package_from_any_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    docs = {n.doc_string for n in to_onnx(ZOO["gpt_tiny"].trace()).graph.node if n.doc_string}
    assert docs and all(d.startswith("lbdl_graph/frontends/zoo/") for d in docs)
    assert not any(".." in d or os.path.isabs(d) or str(REPO) in d for d in docs)


def test_user_frames_read_relative_to_their_project_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    node = next(n for n in to_onnx(_affine()).graph.node if n.name == "proj/matmul")
    path, line = node.doc_string.split(" in ")[0].rsplit(":", 1)
    assert path == "tests/onnx/test_provenance.py"
    assert "ops.matmul(x, w)" in (REPO / path).read_text().splitlines()[int(line) - 1]


def test_files_outside_any_project_show_their_name_only(tmp_path: Path) -> None:
    loose = tmp_path / "deep" / "er" / "script.py"
    assert display_path(str(loose)) == "script.py"
    (tmp_path / "proj" / "src").mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").touch()
    assert display_path(str(tmp_path / "proj" / "src" / "m.py")) == "src/m.py"
    assert display_path("already/shown.py") == "already/shown.py"


def test_strip_provenance_leaves_nothing_in_the_model() -> None:
    model = to_onnx(_affine())
    stripped, table = strip_provenance(model)
    assert all(not n.doc_string and not n.metadata_props for n in stripped.graph.node)
    assert table["proj/matmul"]["node"] == "proj/matmul" and table["proj/matmul"]["op"] == "matmul"
    assert table["proj/matmul"]["source"].startswith("tests/onnx/test_provenance.py:")
    assert any(n.doc_string for n in model.graph.node)  # the input is not modified


def test_saved_without_provenance_errors_still_name_the_node_and_line(tmp_path: Path) -> None:
    out = save_onnx(_affine(), tmp_path / "m.onnx", provenance=False)
    raw = out.read_bytes()
    assert b"test_provenance" not in raw and b"lbdl.node" not in raw
    side = sidecar_path(out)
    assert side == tmp_path / "m.provenance.json"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(side.stat().st_mode) == 0o666 & ~mask
    assert load_sidecar(out) is not None
    with pytest.raises(OnnxError) as info:
        OrtRunner(out, providers="cpu").run(_bad_feed())
    e = info.value
    assert e.node == "proj/matmul" and e.op == "matmul"
    assert e.source is not None and e.source.file == "tests/onnx/test_provenance.py"
    side.unlink()  # without the sidecar the runner still works, with ONNX names only
    with pytest.raises(OnnxError) as info:
        OrtRunner(out, providers="cpu").run(_bad_feed())
    assert info.value.source is None


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"format": "x", "nodes": {}}',
                                  '{"format": "lbdl-provenance/1", "nodes": {"a": {"op": 3}}}'])
def test_a_broken_sidecar_is_a_typed_error_naming_it(tmp_path: Path, text: str) -> None:
    out = save_onnx(_affine(), tmp_path / "m.onnx", provenance=False)
    sidecar_path(out).write_text(text)
    with pytest.raises(OnnxError, match=r"m\.provenance\.json"):
        OrtRunner(out, providers="cpu")


def test_cli_export_strip_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lbdl_graph.frontends.cli import main

    out = tmp_path / "g.onnx"
    assert main(["export", "gpt_tiny", "-o", str(out), "--strip-provenance"]) == 0
    assert "provenance.json" in capsys.readouterr().out
    assert b"gpt.py" not in out.read_bytes()
    table = load_sidecar(out)
    assert table is not None and any(v["source"].startswith("lbdl_graph/frontends/zoo/gpt.py")
                                     for v in table.values() if "source" in v)
