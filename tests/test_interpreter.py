"""The NumPy interpreter: input checks, liveness, profiling, numerics, decompositions."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import ExecutionError, GraphBuilder, InputError, NumericError, ops
from lbdl_graph.backends.numpy import Interpreter, run


def _mlp():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    with GraphBuilder("mlp") as b:
        x = b.input("x", "f32", ("N", 4))
        w1 = b.param("w1", rng.normal(size=(4, 8)).astype(np.float32))
        w2 = b.param("w2", rng.normal(size=(8, 3)).astype(np.float32))
        h = ops.relu(ops.matmul(x, w1))
        y = ops.log(ops.softmax(ops.matmul(h, w2), axis=-1))  # the log is the NaN source below
        return b.build({"y": y}), rng


def test_runs_and_matches_plain_numpy() -> None:
    g, rng = _mlp()
    x = rng.normal(size=(5, 4)).astype(np.float32)
    w1, w2 = g.param_map["w1"].data, g.param_map["w2"].data
    logits = np.maximum(x @ w1, 0) @ w2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    want = np.log(e / e.sum(-1, keepdims=True))
    np.testing.assert_allclose(run(g, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_input_errors() -> None:
    g, _ = _mlp()
    interp = Interpreter(g)
    with pytest.raises(InputError, match="missing input 'x'"):
        interp.run({})
    with pytest.raises(InputError, match="unknown input"):
        interp.run({"x": np.zeros((1, 4), np.float32), "z": 1})
    with pytest.raises(InputError, match="expects dtype float32"):
        interp.run({"x": np.zeros((1, 4), np.float64)})
    with pytest.raises(InputError, match=r"f32\[N,4\]"):
        interp.run({"x": np.zeros((1, 5), np.float32)})


def test_symbolic_dims_must_agree_across_inputs() -> None:
    with GraphBuilder("two") as b:
        x = b.input("x", "f32", ("N", 2))
        y = b.input("y", "f32", ("N", 2))
        g = b.build([ops.add(x, y)])
    with pytest.raises(InputError, match="dim N is 3"):
        run(g, {"x": np.zeros((3, 2), np.float32), "y": np.zeros((4, 2), np.float32)})


def test_intermediates_are_freed_after_last_use() -> None:
    g, _ = _mlp()
    interp = Interpreter(g)
    freed_total = sum(len(s.frees) for s in interp._steps)
    # every node output except the graph output is freed exactly once
    assert freed_total == len(g.nodes) - 1


def test_profile_records_every_node() -> None:
    g, _ = _mlp()
    interp = Interpreter(g, profile=True)
    interp.run({"x": np.ones((2, 4), np.float32)})
    assert [p.node for p in interp.last_profile] == [n.name for n in g.nodes]
    assert all(p.seconds >= 0 and p.out_bytes > 0 for p in interp.last_profile)


def test_check_numerics_names_first_bad_node() -> None:
    with GraphBuilder("nan") as b:
        x = b.input("x", "f32", (3,))
        y = ops.sqrt(x)  # the first node to produce NaN for negative x
        g = b.build([ops.exp(y)])
    with pytest.raises(NumericError) as info:
        run(g, {"x": np.array([1, -1, 2], np.float32)}, check_numerics=True)
    assert info.value.node == "sqrt" and "test_interpreter.py" in str(info.value)


def test_kernel_failure_is_typed_with_node_and_line() -> None:
    with GraphBuilder("bad") as b:
        x = b.input("x", "i64", (3,))
        t = b.param("t", np.array([10, 20, 30, 40], np.float32))
        g = b.build([ops.gather(t, x, axis=0)])
    with pytest.raises(ExecutionError) as info:
        run(g, {"x": np.array([0, 1, 99])})
    assert info.value.node == "gather" and "test_interpreter.py" in str(info.value)


def test_dropout_eval_mode_is_identity_and_train_mode_drops() -> None:
    with GraphBuilder("drop") as b:
        x = b.input("x", "f32", (1000,))
        key = b.input("key", "i64", (2,))
        g = b.build([ops.dropout(x, key, ratio=0.5)])
    feeds = {"x": np.ones(1000, np.float32), "key": np.array([1, 0])}
    np.testing.assert_array_equal(next(iter(run(g, feeds, training=False).values())), 1.0)
    out = next(iter(run(g, feeds).values()))
    assert set(np.unique(out)) <= {0.0, 2.0} and 400 < (out == 0).sum() < 600


def test_outputs_never_alias_parameters_or_inputs() -> None:
    with GraphBuilder("alias") as b:
        x = b.input("x", "f32", (3,))
        w = b.param("w", np.ones(3, np.float32))
        g = b.build({"y": ops.add(x, w), "w_out": w, "x_view": ops.reshape(x, shape=(3, 1))})
    xs = np.zeros(3, np.float32)
    out = run(g, {"x": xs})
    out["w_out"] *= 100
    out["x_view"] += 5
    np.testing.assert_array_equal(g.params[0].data, 1.0)
    np.testing.assert_array_equal(xs, 0.0)
    np.testing.assert_array_equal(run(g, {"x": xs})["y"], 1.0)
