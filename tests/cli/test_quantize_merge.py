"""``lbdl-graph quantize`` and ``lbdl-graph merge``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from .helpers import cli, fails


@pytest.mark.parametrize("scheme", ["int8", "q4_1", "q4_0", "q8_0"])
def test_quantize_weight_schemes(models: Path, tmp_path: Path, scheme: str) -> None:
    out = tmp_path / "q.onnx"
    r = cli("quantize", str(models / "lenet.onnx"), str(out), "--scheme", scheme,
            "--bind", "N=4")
    assert r.returncode == 0, r.stderr
    assert f"weight-only {scheme}" in r.stdout and "bytes_after" in r.stdout
    assert out.stat().st_size < (models / "lenet.onnx").stat().st_size
    m = re.search(r"max abs output diff vs the float model ([\d.e+-]+)", r.stdout)
    assert m is not None and float(m.group(1)) < 1.0
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("MatMulNBits" in ops) == (scheme != "int8")


def test_quantize_static_with_calibration(models: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).random((40, 1, 8, 8), np.float32))
    out = tmp_path / "qs.onnx"
    r = cli("quantize", str(models / "lenet.onnx"), str(out), "--calibration",
            str(tmp_path / "cal.npz"), "--method", "percentile", "--batch-size", "16")
    assert r.returncode == 0, r.stderr
    assert "static int8 (QDQ), percentile calibration on 3 batch(es)" in r.stdout
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_quantize_bad_input(models: Path, tmp_path: Path) -> None:
    src = str(models / "lenet.onnx")
    out = str(tmp_path / "q.onnx")
    np.savez(tmp_path / "wrong.npz", z=np.zeros((4, 1, 8, 8), np.float32))
    fails(cli("quantize", src, out, "--calibration", str(tmp_path / "wrong.npz")), 1,
          "InputError", "missing input 'x'")
    fails(cli("quantize", src, out, "--calibration", str(tmp_path / "none.npz")), 1)
    fails(cli("quantize", src, out, "--scheme", "q4_0", "--calibration",
              str(tmp_path / "wrong.npz")), 2, "--scheme int8")
    fails(cli("quantize", src, out, "--scheme", "q2_k"), 2)
    fails(cli("quantize", src, src), 1, "refusing to overwrite")
    fails(cli("quantize", src, str(tmp_path / "d" / "q.onnx")), 1, "does not exist")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    fails(cli("quantize", str(bad), out), 1, "OnnxError")
    assert not (tmp_path / "q.onnx").exists()


@pytest.fixture(scope="module")
def finetunes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three mlp_tiny exports with different seeds: a base and two "fine-tuned" versions."""
    d = tmp_path_factory.mktemp("merge")
    for seed in range(3):
        assert cli("export", "mlp_tiny", "--seed", str(seed), "-o",
                   str(d / f"m{seed}.onnx")).returncode == 0
    return d


def _params(path: Path) -> dict[str, np.ndarray]:
    """The model's parameters in an exported file (stored transposes read back)."""
    from lbdl_graph.frontends.cli.merge_cmd import load_params

    return load_params(str(path))[0]


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_merge_task_arithmetic_onnx(finetunes: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.onnx"
    m0, m1, m2 = (finetunes / f"m{i}.onnx" for i in range(3))
    r = cli("merge", str(m0), str(m1), str(m2), "-o", str(out), "--weights", "0.5", "0.25")
    assert r.returncode == 0, r.stderr
    assert "task vector norm" in r.stdout
    p0, p1, p2, got = _params(m0), _params(m1), _params(m2), _params(out)
    w = "layers.0.weight"
    want = p0[w] + 0.5 * (p1[w] - p0[w]) + 0.25 * (p2[w] - p0[w])
    np.testing.assert_allclose(got[w], want, rtol=1e-6, atol=1e-7)
    # the merged file stores the weight as its export does: transposed, under w + ".T"
    stored = _initializers(out)
    assert w not in stored and f"{w}.T" in _initializers(m0)
    np.testing.assert_array_equal(stored[f"{w}.T"], got[w].T)
    assert cli("run", str(out)).returncode == 0


def test_merge_ties_to_safetensors_and_back(finetunes: Path, tmp_path: Path) -> None:
    from lbdl_graph.frontends.training import load_checkpoint

    out = tmp_path / "ties.safetensors"
    ms = [str(finetunes / f"m{i}.onnx") for i in range(3)]
    r = cli("merge", *ms, "-o", str(out), "--method", "ties", "--density", "0.5")
    assert r.returncode == 0, r.stderr
    assert "TIES, density 0.5" in r.stdout
    state, meta = load_checkpoint(out)
    assert meta["merged"] == "ties" and state["layers.0.weight"].shape == (16, 12)
    r = cli("merge", ms[0], str(out), "-o", str(tmp_path / "again.onnx"), "--weights", "1")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(_params(tmp_path / "again.onnx")["layers.0.weight"],
                               state["layers.0.weight"], rtol=1e-6)


def test_merge_runs_as_a_graph_equal_to_numpy(finetunes: Path, tmp_path: Path) -> None:
    """The CLI merges through the merge graph; the result equals the NumPy reference and the
    saved merge graph runs on ONNX Runtime to the same parameters."""
    import onnxruntime as ort

    from lbdl_graph.frontends.training import load_checkpoint
    from lbdl_graph.passes.merge import ties_merge

    out, gpath = tmp_path / "ties.safetensors", tmp_path / "merge_graph.onnx"
    ms = [str(finetunes / f"m{i}.onnx") for i in range(3)]
    r = cli("merge", *ms, "-o", str(out), "--method", "ties", "--density", "0.3", "--lam", "0.7",
            "--save-graph", str(gpath))
    assert r.returncode == 0, r.stderr
    assert "merge graph" in r.stdout
    state, _ = load_checkpoint(out)
    want = ties_merge(_params(finetunes / "m0.onnx"), [_params(Path(m)) for m in ms[1:]], 0.3, 0.7)
    sess = ort.InferenceSession(str(gpath), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    on_ort = dict(zip(names, sess.run(None, {}), strict=True))
    for n, w in want.items():
        np.testing.assert_allclose(state[n], w, atol=1e-6, rtol=0)
        np.testing.assert_allclose(on_ort[n], w, atol=1e-6, rtol=0)
    fails(cli("merge", *ms, "-o", str(out), "--save-graph", str(tmp_path / "g.txt")), 2, ".onnx")


def test_merge_bad_input(finetunes: Path, models: Path, tmp_path: Path) -> None:
    m0, m1 = str(finetunes / "m0.onnx"), str(finetunes / "m1.onnx")
    out = str(tmp_path / "o.onnx")
    fails(cli("merge", m0, "-o", out), 2, "at least one")
    fails(cli("merge", m0, str(models / "lenet.onnx"), "-o", out), 1, "GraphError")
    fails(cli("merge", m0, m1, "-o", out, "--method", "average"), 2)
    fails(cli("merge", m0, m1, "-o", out, "--method", "ties", "--weights", "1"), 2)
    fails(cli("merge", m0, m1, "-o", out, "--weights", "1", "2", "3"), 1, "weights")
    fails(cli("merge", m0, m1, "-o", str(tmp_path / "o.txt")), 2, ".safetensors")
    fails(cli("merge", m0, m1, "-o", m1), 1, "refusing to overwrite")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 5)
    fails(cli("merge", m0, str(bad), "-o", out), 1, "safetensors")
    fails(cli("merge", str(bad), m0, "-o", out), 2, "needs an .onnx base")
    fails(cli("merge", m0, m1, "-o", str(tmp_path / "x" / "o.onnx")), 1, "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]
