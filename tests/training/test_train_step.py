"""The compiled training step: state wiring, learning, determinism and bit-identical resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lbdl_graph import AutodiffError, GraphBuilder, ops
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.frontends.training import load_checkpoint, save_checkpoint
from lbdl_graph.passes.optim import SGD, Adam, CosineLR
from lbdl_graph.passes.train_step import TrainStepInfo, make_train_step

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([[0], [1], [1], [0]], np.float32)


def xor_graph(dropout: float = 0.0):  # type: ignore[no-untyped-def]
    """A 2-16-1 tanh MLP with MSE loss (and optional dropout on the hidden layer)."""
    rng = np.random.default_rng(1)
    with GraphBuilder("xor") as b:
        x = b.input("x", "f32", ("N", 2))
        y = b.input("y", "f32", ("N", 1))
        w1 = b.param("w1", rng.normal(size=(2, 16)).astype(np.float32))
        b1 = b.param("b1", np.zeros(16, np.float32))
        w2 = b.param("w2", rng.normal(size=(16, 1)).astype(np.float32) * 0.3)
        h = ops.tanh(ops.add(ops.matmul(x, w1), b1))
        if dropout:
            key = b.input("rng_key", "i64", (2,))
            b.metadata["rng_input"] = "rng_key"
            h = ops.dropout(h, key, ratio=dropout)
        d = ops.sub(ops.matmul(h, w2), y)
        loss = ops.reduce_mean(ops.mul(d, d), axes=None, keepdims=False)
        err = ops.reduce_max(ops.abs_(d), axes=None, keepdims=False)
        return b.build({"loss": loss, "max_err": err})


def test_state_wiring_and_metadata() -> None:
    ts = make_train_step(xor_graph(), Adam(lr=0.05), clip_grad_norm=5.0)
    assert ts.info.params == ("w1", "b1", "w2")
    assert ts.info.state == ("w1", "b1", "w2", "opt.m/w1", "opt.v/w1", "opt.m/b1", "opt.v/b1",
                             "opt.m/w2", "opt.v/w2", "step")
    assert ts.info.batch == ("x", "y")
    assert ts.info.metrics == ("max_err", "grad_norm", "lr")
    assert TrainStepInfo.of(ts.graph) == ts.info
    outs = set(ts.graph.output_names())
    assert {f"{s}:next" for s in ts.info.state} <= outs
    assert {v.name for v in ts.graph.inputs} == {*ts.info.state, "x", "y"}
    assert not ts.graph.params  # every trainable parameter became a state input


def test_mlp_learns_xor() -> None:
    ts = make_train_step(xor_graph(), Adam(lr=0.05))
    runner = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    for _ in range(400):
        out = runner.step({"x": X, "y": Y})
    assert out["max_err"] < 0.2 and out["loss"] < 0.01
    assert int(runner.state()["step"]) == 400


def test_schedule_and_clipping_metrics() -> None:
    ts = make_train_step(xor_graph(), SGD(lr=CosineLR(0.5, total_steps=4), momentum=0.9),
                         clip_grad_norm=1e-3)
    runner = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    lrs, norms = [], []
    w_before = runner.state()["w1"].copy()
    for _ in range(5):
        out = runner.step({"x": X, "y": Y})
        lrs.append(float(out["lr"]))
        norms.append(float(out["grad_norm"]))
    np.testing.assert_allclose(lrs, [0.5, 0.4267767, 0.25, 0.0732233, 0.0], rtol=1e-5)
    # clipped to norm 1e-3: the first update moves w1 by at most lr * 1e-3
    assert all(n > 1e-3 for n in norms)
    assert np.abs(runner.state()["w1"] - w_before).max() < 5 * 0.5 * 1e-3 * 2


def _run(ts, steps: int, start=None):  # type: ignore[no-untyped-def]
    runner = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    if start is not None:
        runner.set_state(start)
    losses = [float(runner.step({"x": X, "y": Y})["loss"]) for _ in range(steps)]
    return runner, losses


def test_dropout_masks_depend_on_step_and_are_deterministic() -> None:
    ts = make_train_step(xor_graph(dropout=0.5), SGD(lr=0.0))  # lr 0: only the mask changes
    _, a = _run(ts, 4)
    _, b = _run(ts, 4)
    assert a == b  # same seed, same steps -> identical masks
    assert len(set(a)) > 1  # a new mask each step


def test_resume_from_checkpoint_is_bit_identical(tmp_path: Path) -> None:
    ts = make_train_step(xor_graph(dropout=0.25), Adam(lr=0.02))
    full, losses_full = _run(ts, 20)
    first, losses_a = _run(ts, 8)
    ck = save_checkpoint(tmp_path / "ck.safetensors", first.state(), {"note": "after 8"})
    state, meta = load_checkpoint(ck)
    assert meta == {"note": "after 8"}
    resumed, losses_b = _run(ts, 12, start=state)
    assert losses_a + losses_b == losses_full
    for k, v in full.state().items():
        np.testing.assert_array_equal(resumed.state()[k], v)


def test_bad_inputs() -> None:
    g = xor_graph()
    with pytest.raises(AutodiffError, match="no output 'nope'"):
        make_train_step(g, Adam(), loss="nope")
    frozen = g.replace(params=[type(p)(p.value, p.data, False) for p in g.params])
    with pytest.raises(AutodiffError, match="no trainable"):
        make_train_step(frozen, Adam())
