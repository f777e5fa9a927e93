"""The bad-input table through the API and the CLI: typed errors, clear messages, no traceback,
no hang and no user file clobbered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lbdl_graph.errors import LbdlError, ResourceError
from lbdl_graph.frontends.cli import main

from .cases import CASES, Case

BY_NAME = {c.name: c for c in CASES}


def _api(case: Case, path: Path) -> Any:
    if case.kind == "onnx":
        from lbdl_graph.frontends.onnx import import_onnx

        return import_onnx(path)
    if case.kind == "text":
        from lbdl_graph.text import parse_graph

        return parse_graph(path.read_text())
    if case.kind == "checkpoint":
        from lbdl_graph.frontends.training.checkpoint import load_checkpoint

        return load_checkpoint(path)
    if case.kind == "npz":
        from lbdl_graph.frontends.cli.common import load_arrays

        return load_arrays(npz=str(path))
    pytest.skip("a CLI-only case")


def _error_names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


@pytest.mark.parametrize("name", [c.name for c in CASES if c.kind != "bind"])
def test_api_raises_the_typed_error(name: str, tmp_path: Path) -> None:
    case = BY_NAME[name]
    path = case.write(tmp_path)
    with pytest.raises(LbdlError) as info:
        _api(case, path)
    assert case.error in _error_names(info.value), (type(info.value), str(info.value))
    text = str(info.value)
    for w in case.words:
        assert w in text, (w, text)
    if case.kind in ("onnx", "npz"):
        assert path.name in text  # names the file
    if isinstance(info.value, ResourceError) and case.kind != "npz":
        assert info.value.nbytes > 1 << 30


def _cli_args(case: Case, path: Path, d: Path) -> list[str] | None:
    out = str(d / "out.npz")
    if case.kind == "onnx":
        return ["run", str(path), "--backend", "numpy", "--out", out]
    if case.kind == "bind":
        return ["run", str(path), "--backend", "numpy", *case.cli, "--out", out]
    if case.kind == "npz":
        return ["run", str(BY_NAME["bind_huge"].write(d)), "--backend", "numpy", "--inputs",
                str(path), "--out", out]
    if case.kind == "checkpoint":
        return ["merge", str(path), str(path), "-o", str(d / "out.safetensors")]
    return None


CLI_CASES = [c.name for c in CASES if c.kind in ("onnx", "bind", "npz", "checkpoint")]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_reports_without_traceback_and_keeps_outputs(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = BY_NAME[name]
    path = case.write(tmp_path)
    args = _cli_args(case, path, tmp_path)
    assert args is not None
    for f in ("out.npz", "out.safetensors"):  # the user's earlier results
        (tmp_path / f).write_bytes(b"precious")
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: {case.error}" in err or case.error in err, err
    assert "Traceback" not in err
    for w in case.words:
        assert w in err, (w, err)
    for f in ("out.npz", "out.safetensors"):
        assert (tmp_path / f).read_bytes() == b"precious"


def test_limit_can_be_raised_by_option_and_environment(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from lbdl_graph.limits import set_max_alloc_bytes

    path = BY_NAME["bind_huge"].write(tmp_path)
    try:
        # N=4096 -> 4096*4 floats: refused under a 1 KiB limit, fine under the default
        assert main(["--max-alloc-bytes", "1K", "run", str(path), "--backend", "numpy",
                     "--bind", "N=4096"]) == 1
        assert "ResourceError" in capsys.readouterr().err
    finally:
        set_max_alloc_bytes(None)
    assert main(["run", str(path), "--backend", "numpy", "--bind", "N=4096"]) == 0
    env = {"LBDL_MAX_ALLOC_BYTES": "1K", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "lbdl_graph", "run", str(path), "--backend",
                        "numpy", "--bind", "N=4096"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 1 and "ResourceError" in r.stderr and "Traceback" not in r.stderr


def test_ort_allocation_failure_is_a_resource_error_naming_the_node() -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph import ops
    from lbdl_graph.backends.onnx.runner import OrtRunner
    from lbdl_graph.builder import GraphBuilder

    b = GraphBuilder("g")
    x = b.input("x", "float32", ["N"])
    y = b.add_node(ops.tile, [x], {"repeats": [10 ** 6]}, name="bomb")[0]
    g = b.build({"y": y})
    with pytest.raises(ResourceError) as info:
        OrtRunner(g).run({"x": np.zeros(10 ** 6, np.float32)})
    assert info.value.node == "bomb"
    assert "bytes" in str(info.value)


def test_fifo_in_a_subprocess_never_hangs(tmp_path: Path) -> None:
    path = BY_NAME["external_fifo"].write(tmp_path)
    r = subprocess.run([sys.executable, "-m", "lbdl_graph", "run", str(path), "--backend",
                        "numpy"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not a regular file" in r.stderr
