"""Optimizer updates of small parameters fused over a flat buffer (passes/fused_update.py):
bit-identical to one chain per parameter on NumPy and ONNX Runtime, same state names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.graph import Graph, Value
from lbdl_graph.passes.fused_update import group_small
from lbdl_graph.passes.optim import SGD, Adam, AdamW, Optimizer
from lbdl_graph.passes.train_step import make_split_train_step, make_train_step

RNG = np.random.default_rng(3)
X = RNG.normal(size=(8, 6)).astype(np.float32)
Y = RNG.normal(size=(8, 3)).astype(np.float32)
OPTIMIZERS = [Adam(1e-2), AdamW(1e-2, weight_decay=0.1), Adam(1e-2, weight_decay=0.05),
              SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01), SGD(0.1)]


def net() -> Graph:
    """6-16-3 tanh MLP with MSE loss; a 0-d scale parameter and a big weight."""
    rng = np.random.default_rng(1)
    with GraphBuilder("net") as b:
        x = b.input("x", "f32", ("N", 6))
        y = b.input("y", "f32", ("N", 3))
        w1 = b.param("w1", rng.normal(size=(6, 16)).astype(np.float32))
        b1 = b.param("b1", rng.normal(size=16).astype(np.float32) * 0.1)
        w2 = b.param("w2", rng.normal(size=(16, 3)).astype(np.float32) * 0.3)
        s = b.param("s", np.array(1.5, np.float32))
        h = ops.tanh(ops.add(ops.matmul(x, w1), b1))
        d = ops.sub(ops.mul(ops.matmul(h, w2), s), y)
        return b.build({"loss": ops.reduce_mean(ops.mul(d, d), axes=None, keepdims=False)})


def run_numpy(opt: Optimizer, below: int, steps: int = 4) -> tuple[list[float], dict]:  # type: ignore[type-arg]
    ts = make_train_step(net(), opt, fuse_below=below)
    r = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    losses = [float(r.step({"x": X, "y": Y})["loss"]) for _ in range(steps)]
    return losses, r.state()


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: repr(o)[:40])
def test_fused_update_is_bit_identical_on_numpy(opt: Optimizer) -> None:
    ref_losses, ref = run_numpy(opt, 0)
    losses, got = run_numpy(opt, 64)  # w2 (48), b1 (16), s (1) fused; w1 (96) alone
    assert losses == ref_losses
    assert got.keys() == ref.keys()
    for k, v in ref.items():
        assert np.array_equal(got[k], v), k
        assert got[k].shape == v.shape


def test_fused_step_has_one_chain_and_unchanged_state() -> None:
    plain = make_train_step(net(), Adam(1e-2), fuse_below=0)
    fused = make_train_step(net(), Adam(1e-2), fuse_below=64)
    assert fused.info == plain.info
    assert {v.name: v.type for v in fused.graph.inputs} == \
        {v.name: v.type for v in plain.graph.inputs}
    sqrt = [n for n in fused.graph.nodes if n.op is ops.sqrt and n.outputs[0].type.shape]
    # Adam's sqrt(v): one over the flat buffer of (b1, w2, s), one for w1
    assert sorted(n.scope for n in sqrt) == ["optim/flat", "optim/w1"]
    nxt = {v.name: v for v in fused.graph.outputs}
    producer = {o: n for n in fused.graph.nodes for o in n.outputs}
    assert producer[nxt["opt.m/b1:next"]].scope == "optim/b1"
    assert producer[nxt["s:next"]].scope == "optim/s"


def test_split_step_fuses_the_same_way() -> None:
    plain = make_split_train_step(net(), SGD(0.1, momentum=0.9), fuse_below=0)
    fused = make_split_train_step(net(), SGD(0.1, momentum=0.9), fuse_below=1 << 20)
    assert fused.update_state == plain.update_state
    feeds = {**{k: np.asarray(v) for k, v in plain.initial_state.items()},
             **{f"grad:{p}": RNG.normal(size=np.shape(plain.initial_state[p])).astype(np.float32)
                for p in plain.info.params}}
    from lbdl_graph.backends.numpy import run

    a = run(plain.update_graph, {v.name: feeds[v.name] for v in plain.update_graph.inputs})
    b = run(fused.update_graph, {v.name: feeds[v.name] for v in fused.update_graph.inputs})
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@dataclass(frozen=True)
class _Scaled(Optimizer):
    """Not elementwise (divides by the parameter's norm): never grouped."""

    lr: float = 0.1

    def update(self, p: Value, g: Value, state: dict, step: Value, lr: Value):  # type: ignore[no-untyped-def, override, type-arg]
        n = ops.sqrt(ops.reduce_sum(ops.mul(g, g), axes=None, keepdims=False))
        return ops.sub(p, ops.mul(lr, ops.div(g, n))), {}


def test_groups_need_an_elementwise_optimizer_and_static_shapes() -> None:
    with GraphBuilder("g") as b:
        vals = {"a": b.input("a", "f32", (4,)), "b": b.input("b", "f32", (2, 2)),
                "c": b.input("c", "f64", (3,)), "d": b.input("d", "f64", (3,)),
                "e": b.input("e", "f32", ("N",)), "big": b.input("big", "f32", (100,))}
    assert group_small(vals, Adam(), 64) == [["a", "b"], ["c", "d"]]
    assert group_small(vals, Adam(), 0) == []
    assert group_small(vals, _Scaled(), 64) == []
    plain = make_train_step(net(), _Scaled(), fuse_below=0)
    fused = make_train_step(net(), _Scaled(), fuse_below=1 << 20)
    assert len(fused.graph.nodes) == len(plain.graph.nodes)


def test_fused_update_matches_on_onnx_runtime() -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph.frontends.training.runners import make_step_runner

    ts = make_train_step(net(), Adam(1e-2, weight_decay=0.05), fuse_below=1 << 20)
    plain = make_train_step(net(), Adam(1e-2, weight_decay=0.05), fuse_below=0)
    ort_fused = make_step_runner(ts, "onnxruntime", providers="cpu")
    ort_plain = make_step_runner(plain, "onnxruntime", providers="cpu")
    ref_losses, ref = run_numpy(Adam(1e-2, weight_decay=0.05), 0)
    for want in ref_losses:
        a = float(ort_fused.step({"x": X, "y": Y})["loss"])
        c = float(ort_plain.step({"x": X, "y": Y})["loss"])
        assert a == c and abs(a - want) <= 1e-5 * max(1.0, abs(want))
    sf, sp = ort_fused.state(), ort_plain.state()
    for k, v in ref.items():
        assert np.array_equal(sf[k], sp[k]), k
        np.testing.assert_allclose(sf[k], v, rtol=1e-5, atol=1e-6)
