"""``lbdl-graph check``: the pre-flight kernel-coverage probe and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from lbdl_graph.backends.onnx import cuda_available
from lbdl_graph.backends.onnx.coverage import ProviderUnavailable, cache_path, check_coverage

from .helpers import cli, fails


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("LBDL_GRAPH_CACHE_DIR", str(d))
    return d


def _model(elem: int) -> onnx.ModelProto:
    """x -> Erf -> Relu -> Add(w): Erf has no float64 kernel on ORT's CPU provider."""
    nodes = [helper.make_node("Erf", ["x"], ["e"], name="erf"),
             helper.make_node("Relu", ["e"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "w"], ["y"], name="add")]
    w = helper.make_tensor("w", elem, [3], [1.0, 2.0, 3.0])
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", elem, [2, 3])],
                          [helper.make_tensor_value_info("y", elem, [2, 3])], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _save(tmp_path: Path, name: str, m: onnx.ModelProto) -> Path:
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def test_missing_dtype_kernel_is_listed_and_cached() -> None:
    res = check_coverage(_model(TensorProto.DOUBLE), "cpu")
    assert [(g.node, g.op, g.inputs) for g in res.missing] == [("erf", "Erf", ("float64",))]
    assert "Erf" in res.missing[0].reason and res.probed == 3 and not res.unprobed
    cached = json.loads(cache_path("cpu").read_text())
    assert any(k.startswith("|Erf|21|float64") and v.startswith("missing") for k, v in
               cached.items())
    again = check_coverage(_model(TensorProto.DOUBLE), "cpu")
    assert again.probed == 0 and again.cached == 3 and len(again.missing) == 1


def test_float32_model_is_clean_and_damaged_cache_is_rebuilt() -> None:
    cache_path("cpu").parent.mkdir(parents=True)
    cache_path("cpu").write_text("{not json")
    res = check_coverage(_model(TensorProto.FLOAT), "cpu")
    assert res.missing == [] and res.unprobed == [] and res.probed == 3


def test_unavailable_provider_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderUnavailable, match=r"not available .* cannot be queried"):
        check_coverage(_model(TensorProto.FLOAT), "cuda")


def test_cli_lists_gaps_and_clean_models(tmp_path: Path) -> None:
    bad = _save(tmp_path, "f64.onnx", _model(TensorProto.DOUBLE))
    good = _save(tmp_path, "f32.onnx", _model(TensorProto.FLOAT))
    r = cli("check", str(bad), "--provider", "cpu")
    assert r.returncode == 1 and "no kernel (1)" in r.stdout and "erf: Erf opset 21" in r.stdout
    r = cli("check", str(good), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["available"] and out["missing"] == [] and out["nodes"] == 3


def test_cli_cuda_says_plainly_when_it_cannot_query(tmp_path: Path) -> None:
    good = _save(tmp_path, "f32.onnx", _model(TensorProto.FLOAT))
    r = cli("check", str(good), "--provider", "cuda")
    if cuda_available():
        assert r.returncode in (0, 1), r.stderr
        assert "CUDAExecutionProvider" in r.stdout
    else:
        fails(r, 3, "cannot be queried")


def test_cli_bad_files(tmp_path: Path) -> None:
    fails(cli("check", str(tmp_path / "nope.onnx")), 1, "CliError", "no such file")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage\xff\xff")
    fails(cli("check", str(junk)), 1, "OnnxError", "junk.onnx")
    txt = tmp_path / "m.txt"
    txt.write_text("x")
    fails(cli("check", str(txt)), 1, "expected an .onnx")
    fails(cli("check", str(junk), "--provider", "tpu"), 2)
