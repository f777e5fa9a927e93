"""``lbdl-graph export`` and ``lbdl-graph run``: zoo models to ONNX, run on both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from .helpers import cli, fails


def test_export_family_tiny_config_at_o2(tmp_path: Path) -> None:
    out = tmp_path / "gpt.onnx"
    r = cli("export", "gpt", "--config", "tiny", "--level", "O2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "gpt_mini inference graph (O2)" in r.stdout and "fuse_linear" in r.stdout
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 21
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["N", "T"]


def test_export_opset_and_seed(tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{k}.onnx" for k in "abc")
    for path, seed in ((a, "0"), (b, "0"), (c, "1")):
        assert cli("export", "mlp_tiny", "--opset", "18", "--seed", seed, "-o",
                   str(path)).returncode == 0
    assert onnx.load(str(a)).opset_import[0].version == 18
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()  # seeded initialisation


def test_export_train_step_runs_with_stored_initial_state(tmp_path: Path) -> None:
    out = tmp_path / "step.onnx"
    r = cli("export", "mlp_tiny", "--train", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "training step" in r.stdout
    model = onnx.load(str(out))
    inits = {t.name for t in model.graph.initializer}
    assert {"layers.0.weight", "opt.m/layers.0.weight", "step"} <= inits
    r = cli("run", str(out), "--bind", "N=4", "--out", str(tmp_path / "o.npz"))
    assert r.returncode == 0, r.stderr
    outs = np.load(tmp_path / "o.npz")
    assert outs["step:next"] == 1 and np.isfinite(outs["loss"]) and outs["loss"] > 0


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_run_random_inputs_prints_outputs(models: Path, backend: str) -> None:
    r = cli("run", str(models / "lenet.onnx"), "--backend", backend, "--bind", "N=3")
    assert r.returncode == 0, r.stderr
    assert "float32[3, 1, 8, 8]" in r.stdout and "(random: x; seed 0)" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("  output "))
    assert "float32[3, 10]" in line and "mean" in line and "std" in line


def test_run_backends_agree_on_given_inputs(models: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((4, 12), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "in.npz", x=x)
    outs = {}
    for backend, how in (("numpy", ["--input", f"x={tmp_path / 'x.npy'}"]),
                         ("onnxruntime", ["--inputs", str(tmp_path / "in.npz")])):
        out = tmp_path / f"{backend}.npz"
        r = cli("run", str(models / "mlp.onnx"), "--backend", backend, *how, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert "random" not in r.stdout
        outs[backend] = np.load(out)["output"]
    assert outs["numpy"].shape == (4, 3)
    np.testing.assert_allclose(outs["numpy"], outs["onnxruntime"], rtol=1e-5, atol=1e-6)


def test_run_bad_input(models: Path, tmp_path: Path) -> None:
    mlp = str(models / "mlp.onnx")
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    fails(cli("run", mlp, "--input", f"x={tmp_path / 'bad.npy'}"), 1, "InputError")
    fails(cli("run", mlp, "--input", f"x={tmp_path / 'bad.npy'}", "--backend", "numpy"), 1)
    fails(cli("run", mlp, "--input", f"x={tmp_path / 'none.npy'}"), 1, "no such file")
    fails(cli("run", mlp, "--input", "x"), 2, "NAME=FILE")
    fails(cli("run", mlp, "--bind", "N"), 2, "--bind")
    fails(cli("run", mlp, "--bind", "N=0"), 2, "--bind")
    fails(cli("run", mlp, "--bind", "N=four"), 2, "not an integer")
    fails(cli("run", mlp, "--backend", "tpu"), 2)
    fails(cli("run", mlp, "--out", str(tmp_path / "no" / "o.npz")), 1, "does not exist")
    fails(cli("run", str(tmp_path / "missing.onnx")), 1, "no such file")


def test_run_corrupt_model(models: Path, tmp_path: Path) -> None:
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes((models / "mlp.onnx").read_bytes()[:200])
    for backend in ("numpy", "onnxruntime"):
        fails(cli("run", str(bad), "--backend", backend), 1, "OnnxError", "trunc.onnx")


def test_export_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    fails(cli("export", "no_such_model", "-o", str(out)), 2, "unknown zoo model", "lenet")
    fails(cli("export", "mlp_tiny", "-o", str(out), "--opset", "5"), 1, "opset 5")
    fails(cli("export", "mlp_tiny", "-o", str(out), "--level", "O9"), 1, "PassError")
    fails(cli("export", "mlp_tiny", "-o", str(out), "--config", "huge"), 2)
    fails(cli("export", "vae", "-o", str(out), "--train"), 1, "single-output")
    fails(cli("export", "mlp_tiny"), 2)
    fails(cli("export", "mlp_tiny", "-o", str(tmp_path / "no" / "m.onnx")), 1, "does not exist")
    fails(cli("export", "mlp_tiny", "-o", str(tmp_path)), 1, "is a directory")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


@pytest.mark.parametrize(("name", "level"), [("resnet_tiny", "O0"), ("gpt_mini", "O0"),
                                             ("gpt_mini", "O2")])
def test_inference_export_stores_weights_untransposed(tmp_path: Path, name: str,
                                                      level: str) -> None:
    from lbdl_graph import ops
    from lbdl_graph.backends.numpy import Interpreter
    from lbdl_graph.backends.onnx import OrtRunner
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.zoo import ZOO

    out = tmp_path / f"{name}.onnx"
    r = cli("export", name, "--level", level, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "fold_params" in r.stdout  # the report names the pass, even at O0
    model = onnx.load(str(out))
    inits = {t.name for t in model.graph.initializer}
    # a tied weight (gpt_mini's embedding is its head) is stored once and transposed on load
    tied = {n.output[0] for n in model.graph.node if n.name.endswith("/tied")}
    assert bool(tied) == (name == "gpt_mini")
    assert not [n.name for n in model.graph.node if n.op_type == "Transpose"
                and n.input[0] in inits and n.output[0] not in tied]
    manual_seed(0)  # the export's default --seed: the same weights
    entry = ZOO[name]
    graph = entry.trace()
    params = {p.value: p.name for p in graph.params}
    transposed = {f"{params[n.inputs[0]]}.T" for n in graph.nodes
                  if n.op is ops.transpose and n.inputs[0] in params}
    assert transposed and transposed <= inits | tied  # stored under the weight's name + ".T"
    feeds = entry.example_inputs()
    want = Interpreter(graph, training=False).run(feeds)
    got = OrtRunner(out).run(feeds)
    assert list(got) == list(want)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=k)
