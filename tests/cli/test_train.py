"""``lbdl-graph train``: the main job, short runs, a full-accuracy run and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.frontends.inspect import parse_svg

from .helpers import cli, fails

FILES = ("model.onnx", "model_O2.onnx", "checkpoint.safetensors", "graph_O2.svg",
         "graph_O2_diff.svg", "summary.txt")


def _accuracy(stdout: str) -> float:
    m = re.search(r"test accuracy: ([\d.]+)%", stdout)
    assert m, stdout
    return float(m.group(1)) / 100


def test_short_lenet_run_writes_every_file_and_checks_agreement(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("train", "lenet", "--epochs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a TTY
    for f in FILES:
        assert (out / f).stat().st_size > 0, f
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert re.search(r"max abs logit diff [\d.e+-]+, equal predictions (\d+)/\1 \[agree within",
                     r.stdout), r.stdout
    assert 0.3 < _accuracy(r.stdout) <= 1.0
    assert "epoch  2/2" in r.stdout and "files in" in r.stdout
    svg = (out / "graph_O2.svg").read_text()
    assert "<svg" in svg[:1000] and svg.rstrip().endswith("</svg>")
    diff = (out / "graph_O2_diff.svg").read_text()
    assert "removed" in diff
    for picture in (svg, diff):  # readable: no overlaps, labels >= 9 px, bounded size
        geo = parse_svg(picture)
        assert geo.boxes and geo.overlaps() == [] and geo.min_font_px >= 9
        assert geo.long_side_px <= 4000 and geo.bytes <= 1_000_000
    text = (out / "summary.txt").read_text()
    assert "Total params: 105,506" in text and "fuse_linear" in text
    stages = [g["id"] for g in json.loads((out / "explorer" / "lenet_digits.json").read_text())
              ["graphs"]]
    assert stages[0] == "00 traced" and any(s.endswith("train step") for s in stages)
    assert (out / "explorer" / "lenet_digits.diff_o0_final.nodedata.json").stat().st_size > 0
    assert f"lbdl-graph explore {out / 'model.onnx'} --compare O0" in r.stdout


def test_trained_model_runs_and_matches_checkpoint(tmp_path: Path) -> None:
    from lbdl_graph.frontends.training import load_checkpoint

    out = tmp_path / "run"
    r = cli("train", "mlp", "--epochs", "1", "--out", str(out), "--seed", "3")
    assert r.returncode == 0, r.stderr
    state, meta = load_checkpoint(out / "checkpoint.safetensors")
    assert meta["zoo"] == "mlp" and meta["seed"] == 3 and meta["epochs"] == 1
    assert state["layers.0.weight"].shape == (256, 64)
    r = cli("run", str(out / "model.onnx"), "--bind", "N=5", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert "float32[5, 10]" in r.stdout


def test_numpy_training_backend_matches_onnxruntime(tmp_path: Path) -> None:
    runs = {}
    for backend in ("numpy", "onnxruntime"):
        r = cli("train", "mlp", "--epochs", "1", "--backend", backend, "--out",
                str(tmp_path / backend))
        assert r.returncode == 0, r.stderr
        assert f"training on {backend}" in r.stdout
        runs[backend] = _accuracy(r.stdout)
    assert abs(runs["numpy"] - runs["onnxruntime"]) < 0.02


@pytest.mark.slow
def test_default_lenet_run_reaches_97_percent(tmp_path: Path) -> None:
    r = cli("train", "lenet", cwd=tmp_path)  # the README's run command, default output dir
    assert r.returncode == 0, r.stderr
    assert _accuracy(r.stdout) >= 0.97
    assert "[target >= 97%: ok]" in r.stdout
    m = re.search(r"max abs logit diff ([\d.e+-]+)", r.stdout)
    assert m is not None and float(m.group(1)) < 1e-3
    for f in FILES:
        assert (tmp_path / "runs" / "lenet" / f).is_file()


def test_unknown_model_is_a_usage_error_listing_trainable_ones(tmp_path: Path) -> None:
    fails(cli("train", "resnet50", "--out", str(tmp_path)), 2, "lenet", "mlp")


@pytest.mark.parametrize("args", [("--epochs", "0"), ("--batch-size", "-1"), ("--lr", "0"),
                                  ("--backend", "tpu"), ("--epochs", "two")])
def test_bad_options_exit_2(args: tuple[str, str], tmp_path: Path) -> None:
    fails(cli("train", "lenet", *args, "--out", str(tmp_path / "o")), 2)
    assert not (tmp_path / "o" / "model.onnx").exists()


def test_unwritable_output_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("train", "lenet", "--out", str(blocker))
    fails(r, 1, "not a directory")
    assert "epoch" not in r.stdout
    fails(cli("train", "lenet", "--out", str(blocker / "sub")), 1, "CliError")


def test_digits_split_is_fixed_and_disjoint() -> None:
    from lbdl_graph.frontends.cli.train_cmd import digits_split

    a = digits_split("flat")
    b = digits_split("image")
    assert len(a[0]) + len(a[2]) == 1797 and len(a[2]) == 359
    np.testing.assert_array_equal(a[0], b[0].reshape(len(b[0]), -1))
    m = digits_split("mnist")[0]
    assert m.shape[1:] == (1, 28, 28) and m[:, :, :2].max() == 0
