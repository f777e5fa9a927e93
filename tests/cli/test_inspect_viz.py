"""``lbdl-graph inspect``, ``optimize`` and ``viz`` on zoo models and ONNX files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx

from lbdl_graph.frontends.inspect import parse_svg

from .helpers import cli, fails


def test_inspect_zoo_model_summary_and_o2_report() -> None:
    r = cli("inspect", "lenet_digits")
    assert r.returncode == 0, r.stderr
    assert "Total params: 105,506" in r.stdout
    # fold_params stores the two transposed linear weights, simplify drops the output identity
    assert "O2: 19 -> 13 nodes" in r.stdout
    assert "fold_params" in r.stdout and "new_params=2" in r.stdout
    assert "fuse_linear" in r.stdout and "matmul_add_to_linear=2" in r.stdout
    # the transposed classifier weights: (200 * 256 + 10 * 200) * 4 bytes
    assert "Derived from params (MB): 0.21" in r.stdout


def test_inspect_onnx_json_with_bindings(models: Path) -> None:
    r = cli("inspect", str(models / "lenet.onnx"), "--json", "--bind", "N=8", "--level", "O1")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["summary"]["totals"]["params"] == 105506
    assert data["summary"]["bindings"]["N"] == 8
    assert data["level"] == "O1"
    # an inference path: parameters are folded first (the export already stored them folded)
    names = [p["name"] for p in data["passes"]["passes"]]
    assert names[:2] == ["fold_params", "fold_constants"]
    assert data["passes"]["passes"][0]["changed"] is False
    assert data["summary"]["totals"]["param_derived_bytes"] == 0


def test_inspect_pass_list_and_family_config() -> None:
    r = cli("inspect", "resnet", "--config", "tiny", "--level", "fold_batch_norm,fuse_conv",
            "--by", "node")
    assert r.returncode == 0, r.stderr
    assert "Summary of 'resnet_tiny'" in r.stdout and "fold_batch_norm" in r.stdout


def test_inspect_bad_input(tmp_path: Path) -> None:
    fails(cli("inspect", "nope"), 2, "unknown zoo model")
    fails(cli("inspect", "mlp_tiny", "--level", "O7"), 1, "PassError", "O7")
    fails(cli("inspect", "mlp_tiny", "--level", "simplify,bogus"), 1, "bogus")
    fails(cli("inspect", "mlp_tiny", "--bind", "N=-1"), 2)
    fails(cli("inspect", str(tmp_path / "missing.onnx")), 1, "no such file")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    fails(cli("inspect", str(bad)), 1, "OnnxError")


def test_optimize_onnx_with_check_and_diff(models: Path, tmp_path: Path) -> None:
    out = tmp_path / "o3.onnx"
    r = cli("optimize", str(models / "mlp.onnx"), str(out), "--level", "O3", "--check",
            "--diff")
    assert r.returncode == 0, r.stderr
    assert "translation checked" in r.stdout and "fuses" in r.stdout
    assert len(onnx.load(str(out)).graph.node) < len(onnx.load(str(models / "mlp.onnx")).graph.node)
    r = cli("run", str(out), "--backend", "numpy")
    assert r.returncode == 0, r.stderr


def test_optimize_json(models: Path, tmp_path: Path) -> None:
    r = cli("optimize", str(models / "lenet.onnx"), str(tmp_path / "o.onnx"), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["nodes_before"] > data["nodes_after"]


def test_optimize_bad_input(models: Path, tmp_path: Path) -> None:
    src = str(models / "mlp.onnx")
    fails(cli("optimize", src, src), 1, "refusing to overwrite")
    fails(cli("optimize", src, str(tmp_path / "o.onnx"), "--level", "O5"), 1, "PassError")
    fails(cli("optimize", src, str(tmp_path / "d" / "o.onnx")), 1, "does not exist")
    fails(cli("optimize", str(tmp_path / "none.onnx"), str(tmp_path / "o.onnx")), 1)
    trunc = tmp_path / "t.onnx"
    trunc.write_bytes((models / "mlp.onnx").read_bytes()[:300])
    fails(cli("optimize", str(trunc), str(tmp_path / "o.onnx")), 1, "OnnxError")
    fails(cli("optimize", src), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]


def test_viz_svg_dot_and_diff(models: Path, tmp_path: Path) -> None:
    svg = tmp_path / "g.svg"
    r = cli("viz", "transformer_tiny", "-o", str(svg))
    assert r.returncode == 0, r.stderr
    assert "<svg" in svg.read_text()[:400] and "encoder" in svg.read_text()
    assert re.search(r"wrote .*g\.svg: transformer_tiny: depth \d of \d, \d+ boxes", r.stdout)
    geo = parse_svg(svg.read_text())
    assert geo.overlaps() == [] and geo.min_font_px >= 9 and len(geo.boxes) <= 60
    dot = tmp_path / "g.dot"
    assert cli("viz", str(models / "mlp.onnx"), "--dot", "-o", str(dot)).returncode == 0
    assert dot.read_text().startswith("digraph")
    diff = tmp_path / "d.svg"
    r = cli("viz", "lenet_digits", "--diff", "O2", "-o", str(diff))
    assert r.returncode == 0, r.stderr
    assert "fused" in r.stdout and "fuse_linear" in r.stdout
    text = diff.read_text()
    assert "before:" in text and "rule: fuse_linear" in text
    assert parse_svg(text).overlaps() == []
    r = cli("viz", "mlp_tiny", "--diff", "O2", "--dot", "-o", str(dot))
    assert r.returncode == 0 and "#e9d8fd" in dot.read_text()  # fused boxes coloured


def test_viz_depth_expand_focus(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    r = cli("viz", "gpt_tiny", "--depth", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "depth 1 of 4" in r.stdout and "more detail: --depth 2" in r.stdout
    ids = _ids(out)
    assert "scope:layers.0" in ids and "scope:layers.0/attn" not in ids
    r = cli("viz", "gpt_tiny", "--depth", "1", "--expand", "layers.0", "--expand",
            "layers.0.attn", "-o", str(out))
    assert r.returncode == 0, r.stderr
    ids = _ids(out)
    assert "node:layers.0.attn/softmax" in ids and "scope:layers.1" in ids
    r = cli("viz", "gpt_tiny", "--focus", "layers.1.mlp", "-o", str(out))
    assert r.returncode == 0, r.stderr
    ids = _ids(out)
    assert "node:layers.1.mlp.fc1/matmul" in ids and not any("layers.0" in i for i in ids)
    assert any(i.startswith("in:") for i in ids) and any(i.startswith("out:") for i in ids)


def _ids(path: Path) -> set[str]:
    return {r.id for r in parse_svg(path.read_text()).boxes}


def test_viz_bad_input(tmp_path: Path) -> None:
    out = str(tmp_path / "g.svg")
    fails(cli("viz", "nope", "-o", out), 2, "unknown zoo model")
    fails(cli("viz", "mlp_tiny", "-o", str(tmp_path / "x" / "g.svg")), 1, "does not exist")
    fails(cli("viz", "mlp_tiny", "--diff", "O8", "-o", out), 1, "O8")
    fails(cli("viz", "mlp_tiny"), 2)
    fails(cli("viz", "gpt_tiny", "--expand", "layers.0.atn", "-o", out), 1, "ScopeError",
          "no scope 'layers.0.atn'", "nearest: layers.0/attn")
    fails(cli("viz", "gpt_tiny", "--focus", "layrs.1", "-o", out), 1, "ScopeError",
          "nearest: layers.1")
    from lbdl_graph.frontends.inspect import collapse
    from lbdl_graph.frontends.zoo import ZOO
    from lbdl_graph.passes.fold_parameters import fold_params

    full = len(collapse(fold_params(ZOO["gpt_tiny"].trace()).graph, depth=4,
                        max_boxes=10**6).boxes)  # what viz draws: weights folded first
    fails(cli("viz", "gpt_tiny", "--depth", "9", "--max-boxes", "40", "-o", out), 1,
          "PictureError", f"at depth 4 would have {full} boxes (limit 40)", "--depth 2",
          "lbdl-graph explore")
    fails(cli("viz", "gpt_tiny", "--depth", "0", "-o", out), 2, "--depth must be at least 1")
    fails(cli("viz", "gpt_tiny", "--focus", "layers.0", "--diff", "O2", "-o", out), 2)
    assert list(tmp_path.iterdir()) == []
