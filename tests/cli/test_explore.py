"""``lbdl-graph explore``: --out files, ONNX input, the training step, the server, bad input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .helpers import cli


def _collection(d: Path, name: str) -> dict:
    return dict(json.loads((d / f"{name}.json").read_text()))


def test_explore_out_writes_stages_and_overlays(tmp_path: Path) -> None:
    out = tmp_path / "ex"
    r = cli("explore", "gpt_tiny", "--out", str(out), "--compare", "O0", "--train",
            "--bind", "N=2,T=4")
    assert r.returncode == 0, r.stderr
    coll = _collection(out, "gpt_tiny")
    ids = [g["id"] for g in coll["graphs"]]
    assert ids[0] == "00 traced" and "(final O2)" in " ".join(ids)
    assert any(i.endswith("train step") for i in ids) and ids[-1].endswith("onnxruntime")
    step = next(g for g in coll["graphs"] if g["id"].endswith("train step"))
    assert any(n["namespace"].startswith("grad") for n in step["nodes"])
    names = sorted(p.name for p in out.iterdir())
    assert "gpt_tiny.diff_o0_final.nodedata.json" in names
    assert "gpt_tiny.saved_for_backward_bytes.nodedata.json" in names
    assert "open with: model-explorer" in r.stdout
    for p in out.glob("*.nodedata.json"):
        assert set(json.loads(p.read_text())) <= set(ids), p


def test_explore_onnx_file(models: Path, tmp_path: Path) -> None:
    out = tmp_path / "ex"
    r = cli("explore", str(models / "lenet.onnx"), "--out", str(out), "--no-onnx")
    assert r.returncode == 0, r.stderr
    coll = _collection(out, "lenet")
    assert coll["graphs"][0]["id"] == "00 traced"
    assert not any(g["id"].endswith("onnxruntime") for g in coll["graphs"])


def test_inspect_prints_the_explore_command() -> None:
    r = cli("inspect", "mlp_tiny")
    assert r.returncode == 0, r.stderr
    assert "lbdl-graph explore mlp_tiny --compare O0" in r.stdout


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit code, stderr)."""
    from lbdl_graph.frontends.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:  # usage errors
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "code", "words"), [
    (("nope",), 2, "unknown zoo model"),
    (("mlp_tiny", "--level", "O7"), 1, "PassError: unknown pass or level 'O7'"),
    (("mlp_tiny", "--compare", "bogus"), 1, "'bogus'"),
    (("MODELS/mlp.onnx", "--train"), 2, "'loss' output"),
    (("vae", "--train"), 1, "ExplorerError: --train: zoo model 'vae' has 3 outputs"),
    (("mlp_tiny", "--bind", "N=0"), 2, "--bind N: size must be >= 1"),
])
def test_explore_bad_input(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           argv: tuple[str, ...], code: int, words: str) -> None:
    argv = tuple(a.replace("MODELS", str(models)) for a in argv)
    got, err = _main(capsys, "explore", *argv, "--out", str(tmp_path / "o"))
    assert got == code, err
    assert words in err and "Traceback" not in err


def test_explore_bad_output_and_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    code, err = _main(capsys, "explore", "mlp_tiny", "--out", str(f))
    assert code == 1 and "not a directory" in err
    assert f.read_text() == "x"
    code, err = _main(capsys, "explore", "mlp_tiny", "--port", "70000", "--no-browser",
                      "--no-onnx")
    assert code == 1 and "ExplorerError: port 70000 is not a TCP port" in err


def _health(port: int) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/check_health", timeout=5) as r:
        return bytes(r.read())


def test_explore_serves_on_the_next_free_port_until_interrupted() -> None:
    pytest.importorskip("model_explorer")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbdl_graph", "explore", "mlp_tiny", "--port", str(busy),
         "--no-browser", "--no-onnx"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Model Explorer on"):
                break
        text = "".join(lines)
        assert f"port {busy} in use; using " in text, (text, proc.stderr and proc.stderr.read())
        port = int(text.split(f"port {busy} in use; using ")[1].split()[0])
        assert f"http://127.0.0.1:{port}/?data=" in text
        assert _health(port) == b"model_explorer_ok"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopping" in out and "Traceback" not in err
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
