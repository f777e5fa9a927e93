"""The ONNX Runtime runners: input checks, error mapping, quiet providers, stateful IOBinding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest

from lbdl_graph import GraphBuilder, InputError, OnnxError, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import (
    OrtRunner,
    OrtStatefulRunner,
    cuda_available,
    run_onnxruntime,
    to_onnx,
)
from lbdl_graph.graph import Graph


def affine() -> Graph:
    """y = x @ w + b with a symbolic batch and a symbolic inner dim."""
    b = GraphBuilder("affine")
    x = b.input("x", "f32", ["N", "K"])
    w = b.param("w", np.ones((4, 3), np.float32))
    c = b.input("c", "f32", ["N", 3])
    with b:
        y = ops.add(ops.matmul(x, w), c)  # the matmul's line, named in run-time errors
    return b.build([y])


def feeds(n: int = 2, k: int = 4) -> dict[str, np.ndarray]:
    """Inputs for :func:`affine`."""
    return {"x": np.ones((n, k), np.float32), "c": np.zeros((n, 3), np.float32)}


def test_runs_and_matches_numpy() -> None:
    g = affine()
    got = OrtRunner(g, providers="cpu").run(feeds())
    np.testing.assert_array_equal(got["add"], Interpreter(g).run(feeds())["add"])
    assert run_onnxruntime(g, feeds(), providers="cpu")["add"].shape == (2, 3)


@pytest.mark.parametrize("bad, message", [
    ({"x": np.ones((2, 4), np.float32)}, "missing input 'c'"),
    ({**feeds(), "z": np.ones(1)}, "unknown input"),
    ({**feeds(), "x": np.ones((2, 4), np.float64)}, "expects dtype float32"),
    ({**feeds(), "x": np.ones((2, 4, 1), np.float32)}, "expects rank 2"),
    ({**feeds(), "c": np.zeros((2, 5), np.float32)}, "expects shape"),
    ({**feeds(), "c": np.zeros((3, 3), np.float32)}, "dim N is 2"),
])
def test_bad_inputs_raise_input_error_before_ort(bad: dict[str, np.ndarray],
                                                 message: str) -> None:
    with pytest.raises(InputError, match=message):
        OrtRunner(affine(), providers="cpu").run(bad)


def test_run_time_error_names_the_node_and_line(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OnnxError) as info:
        OrtRunner(affine(), providers="cpu").run(feeds(k=5))  # K=5 does not fit w's 4 rows
    assert capfd.readouterr() == ("", "")  # the typed error only: ORT logs nothing
    e = info.value
    assert e.node == "matmul" and e.op == "matmul"
    assert e.source is not None and e.source.file.endswith("test_runner.py")
    lines = Path(e.source.file).read_text().splitlines()
    assert "ops.matmul(x, w)" in lines[e.source.line - 1]
    assert "onnxruntime_src" not in str(e) and "[ONNXRuntimeError]" not in str(e)
    assert e.__cause__ is None and e.__suppress_context__


def _reshape_model() -> onnx.ModelProto:
    b = GraphBuilder("rs")
    x = b.input("x", "f32", [2, 6])
    with b, b.scope("head"):
        y = ops.reshape(x, shape=(3, 4))
    return to_onnx(b.build([y]))


def test_reshape_error_from_a_model_maps_through_node_metadata() -> None:
    m = _reshape_model()  # a ModelProto: the map comes from each node's metadata and doc_string
    shape = next(t for t in m.graph.initializer if t.name.startswith("head/reshape/shape"))
    shape.CopyFrom(onnx.numpy_helper.from_array(np.array([5, 5], np.int64), shape.name))
    with pytest.raises(OnnxError, match="reshape") as info:
        OrtRunner(m, providers="cpu", optimization="disable").run({"x": np.ones((2, 6),
                                                                               np.float32)})
    assert info.value.node == "head/reshape" and info.value.op == "reshape"
    assert info.value.source is not None and info.value.source.file.endswith("test_runner.py")


def test_session_creation_error_names_the_node() -> None:
    b = GraphBuilder("t")
    x = b.input("x", "f32", [2, 3])
    with b:
        y = ops.transpose(x, perm=(1, 0), name="flip")
    m = to_onnx(b.build([y]))
    m.graph.node[0].attribute[0].ints[:] = [0, 0]  # not a permutation
    with pytest.raises(OnnxError, match="session creation") as info:
        OrtRunner(m, providers="cpu")
    assert info.value.node == "flip" and info.value.op == "transpose"


def test_provider_choice() -> None:
    r = OrtRunner(affine())  # automatic: CUDA only where it really works
    assert r.providers[0] == ("CUDAExecutionProvider" if cuda_available()
                              else "CPUExecutionProvider")
    assert OrtRunner(affine(), providers=["CPUExecutionProvider"]).providers == [
        "CPUExecutionProvider"]
    with pytest.raises(OnnxError, match="unknown providers"):
        OrtRunner(affine(), providers="tpu")
    if not cuda_available():
        with pytest.raises(OnnxError, match="CUDA"):
            OrtRunner(affine(), providers="cuda")


@pytest.mark.parametrize("level", ["all", "extended", "basic", "disable"])
def test_optimization_levels_agree(level: str) -> None:
    got = OrtRunner(affine(), providers="cpu", optimization=level, intra_op_threads=1)
    np.testing.assert_array_equal(got.run(feeds())["add"], np.full((2, 3), 4, np.float32))


@pytest.mark.parametrize(("env", "arg", "want"), [
    ("1", None, 1), ("3,2", None, 3), (" 2 ", None, 2), ("", None, 0), ("0", None, 0),
    ("many", None, 0), ("1", 2, 2), (None, None, 0), (None, 1, 1)])
def test_threads_follow_omp_num_threads(monkeypatch: pytest.MonkeyPatch, env: str | None,
                                        arg: int | None, want: int) -> None:
    # OMP_NUM_THREADS=1 gives a one-thread session (ORT would spin a worker per core otherwise);
    # an explicit intra_op_threads wins; unset or unusable values leave ORT's default (0)
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    r = OrtRunner(affine(), providers="cpu", intra_op_threads=arg)
    assert r.session.get_session_options().intra_op_num_threads == want
    np.testing.assert_array_equal(r.run(feeds())["add"], np.full((2, 3), 4, np.float32))


def test_unknown_optimization_level() -> None:
    with pytest.raises(OnnxError, match="optimization"):
        OrtRunner(affine(), optimization="max")


_QUIET_SCRIPT = """
import numpy as np
from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.onnx import OrtRunner, cuda_available
b = GraphBuilder("q")
x = b.input("x", "f32", [2])
with b:
    y = ops.exp(x)
r = OrtRunner(b.build([y]))
r.run({"x": np.zeros(2, np.float32)})
cuda_available()
print("ok")
"""


def test_provider_probe_and_sessions_print_nothing() -> None:
    # a fresh interpreter, so the CUDA probe really runs (it is cached per process)
    done = subprocess.run([sys.executable, "-c", _QUIET_SCRIPT], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n" and done.stderr == ""


def test_creating_a_session_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    OrtRunner(affine()).run(feeds())
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_bfloat16_inputs_and_outputs_cross_the_host_boundary() -> None:
    b = GraphBuilder("bf")
    x = b.input("x", "bf16", [4])
    with b:
        y = ops.cast(ops.mul(ops.cast(x, to="f32"), b.constant(2.0, "f32")), to="bf16")
    xs = np.array([1.5, -2.0, 3.25, 0.0], dtype=ml_dtypes.bfloat16)
    out = OrtRunner(b.build([y]), providers="cpu").run({"x": xs})
    (got,) = out.values()
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), xs.astype(np.float32) * 2)


# ---------------------------------------------------------------- stateful runner


def sgd_step() -> Graph:
    """w:next = w - 0.1 * mean(x, 0) and loss = sum(w * w): the state is w."""
    b = GraphBuilder("sgd")
    w = b.input("w", "f32", [3])
    x = b.input("x", "f32", ["B", 3])
    with b:
        g = ops.reduce_mean(x, axes=(0,), keepdims=False)
        w_next = ops.sub(w, ops.mul(b.constant(0.1, "f32"), g))
        loss = ops.reduce_sum(ops.mul(w, w), keepdims=False)
    return b.build({"w:next": w_next, "loss": loss})


def test_stateful_runner_keeps_state_in_ort_memory() -> None:
    r = OrtStatefulRunner(sgd_step(), {"w": "w:next"},
                          init={"w": np.array([1, 2, 3], np.float32)}, providers="cpu")
    w = np.array([1, 2, 3], np.float32)
    rng = np.random.default_rng(0)
    for step in range(6):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        out = r.step({"x": x})
        assert list(out) == ["loss"]  # the state does not come back each step
        np.testing.assert_allclose(out["loss"], np.sum(w * w), rtol=1e-6)
        w = w - np.float32(0.1) * x.mean(axis=0)
        np.testing.assert_allclose(r.state()["w"], w, rtol=1e-6)
        assert r.steps == step + 1
    r.set_state({"w": np.zeros(3, np.float32)})
    assert r.step({"x": np.ones((2, 3), np.float32)})["loss"] == 0.0
    np.testing.assert_allclose(r.state()["w"], np.full(3, -0.1, np.float32))


def dropout_step() -> Graph:
    """A parameter and a random key as state: the dropout mask changes every step."""
    b = GraphBuilder("drop_sgd")
    w = b.param("w", np.linspace(-1, 1, 4, dtype=np.float32))
    key = b.input("key", "i64", [2])
    x = b.input("x", "f32", ["B", 4])
    with b:
        h = ops.dropout(ops.mul(x, w), key, ratio=0.5, salt=7)
        loss = ops.reduce_sum(h, keepdims=False)
        grad = ops.reduce_sum(ops.dropout(x, key, ratio=0.5, salt=7), axes=(0,), keepdims=False)
        w_next = ops.sub(w, ops.mul(b.constant(0.01, "f32"), grad))
        key_next = ops.add(key, b.constant(np.array([0, 1], np.int64)))
    return b.build({"loss": loss, "w:next": w_next, "key:next": key_next})


def test_stateful_runner_with_param_and_key_matches_numpy() -> None:
    g = dropout_step()
    r = OrtStatefulRunner(g, {"w": "w:next", "key": "key:next"},
                          init={"key": np.array([42, 0], np.int64)}, providers="cpu")
    ref = Interpreter(g)
    w, key = g.param_map["w"].data, np.array([42, 0], np.int64)
    x = np.arange(24, dtype=np.float32).reshape(6, 4) / 10
    for _ in range(4):
        want = ref.run({"key": key, "x": x}, params={"w": w})
        got = r.step({"x": x})
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
        w, key = want["w:next"], want["key:next"]
        state = r.state()
        np.testing.assert_allclose(state["w"], w, rtol=1e-6)
        np.testing.assert_array_equal(state["key"], key)


def test_stateful_runner_rejects_bad_state() -> None:
    with pytest.raises(InputError, match="not an input"):
        OrtStatefulRunner(sgd_step(), {"v": "w:next"}, providers="cpu")
    with pytest.raises(InputError, match="not an output"):
        OrtStatefulRunner(sgd_step(), {"w": "w_next"}, providers="cpu")
    with pytest.raises(InputError, match="initial value"):
        OrtStatefulRunner(sgd_step(), {"w": "w:next"}, providers="cpu")
    with pytest.raises(InputError, match="expects shape"):
        OrtStatefulRunner(sgd_step(), {"w": "w:next"}, init={"w": np.zeros(4, np.float32)},
                          providers="cpu")
    r = OrtStatefulRunner(sgd_step(), {"w": "w:next"}, init={"w": np.zeros(3, np.float32)},
                          providers="cpu")
    with pytest.raises(InputError, match="missing input 'x'"):
        r.step({})
    with pytest.raises(InputError, match="expects"):
        r.set_state({"w": np.zeros(2, np.float32)})
