"""Rematerialisation: same gradients, lower peak memory, policies, placement and the cost model."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from lbdl_graph import Graph, GraphBuilder, ShapeError, Value, ops, verify
from lbdl_graph.analysis import last_uses
from lbdl_graph.backends.numpy import Interpreter, run
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.cost import dim_value, flops, peak_memory, value_bytes
from lbdl_graph.passes.optim import SGD
from lbdl_graph.passes.remat import (
    REMAT_PREFIX,
    RematError,
    activation_values,
    remat_report,
    rematerialize,
)
from lbdl_graph.passes.train_step import make_train_step

N = 64
BIND = {"N": N}


def deep_mlp(layers: int = 16, width: int = 16, dropout: float = 0.1) -> Graph:
    """A tanh MLP with dropout (key input ``key``) and an MSE loss, one scope per layer."""
    rng = np.random.default_rng(0)
    with GraphBuilder("mlp") as b:
        x = b.input("x", "f32", ("N", width))
        y = b.input("y", "f32", ("N", width))
        key = b.input("key", "i64", (2,))
        b.metadata["rng_input"] = "key"
        h = x
        for i in range(layers):
            with b.scope(f"layers.{i}"):
                w = b.param(f"layers.{i}.w", (rng.standard_normal((width, width))
                                              / math.sqrt(width)).astype(np.float32))
                bias = b.param(f"layers.{i}.b", rng.standard_normal(width).astype(np.float32))
                h = ops.add(ops.matmul(h, w), bias)
                h = ops.tanh(h) if i % 2 else ops.relu(h)
                h = ops.dropout(h, key, ratio=0.1, salt=i) if dropout else h
        d = ops.sub(h, y)
        return b.build({"loss": ops.reduce_mean(ops.mul(d, d), axes=None, keepdims=False)})


def conv_net() -> Graph:
    """Six 3x3 conv + relu blocks (the last with a max pool) and a linear head, MSE loss."""
    rng = np.random.default_rng(1)
    with GraphBuilder("convnet") as b:
        x = b.input("x", "f32", ("N", 2, 8, 8))
        y = b.input("y", "f32", ("N", 3))
        h, c = x, 2
        for i in range(6):
            with b.scope(f"features.{i}"):
                w = b.param(f"features.{i}.w",
                            (rng.standard_normal((4, c, 3, 3)) * 0.3).astype(np.float32))
                h = ops.relu(ops.conv(h, w, None, pads=(1, 1, 1, 1)))
                c = 4
                if i == 5:  # two outputs: values and indices
                    h, _ = ops.max_pool(h, kernel_shape=(2, 2), strides=(2, 2))
        with b.scope("head"):
            h = ops.reshape(h, shape=(0, -1))
            w = b.param("head.w", (rng.standard_normal((64, 3)) * 0.1).astype(np.float32))
            d = ops.sub(ops.matmul(h, w), y)
        return b.build({"loss": ops.reduce_mean(ops.mul(d, d), axes=None, keepdims=False)})


def feeds_for(graph: Graph, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        shape = tuple(N if isinstance(d, str) else d for d in v.shape)
        out[v.name] = (np.array([7, 3], np.int64) if v.dtype.name == "int64" and shape == (2,)
                       else rng.standard_normal(shape).astype(v.dtype.numpy))
    return out


def assert_identical(before: Graph, after: Graph) -> None:
    feeds = feeds_for(before)
    want, got = run(before, feeds), run(after, feeds)
    assert list(got) == list(want)
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w, err_msg=name)


@pytest.fixture(scope="module")
def mlp_grad() -> Graph:
    return grad(deep_mlp())


# ---------------------------------------------------------------- correctness


@pytest.mark.parametrize("policy", [{"policy": "sqrt"}, {"policy": "every_k", "k": 1},
                                    {"policy": "every_k", "k": 3},
                                    {"policy": "budget", "budget_bytes": 80_000}])
def test_mlp_gradients_bit_identical(mlp_grad: Graph, policy: dict) -> None:
    r = rematerialize(mlp_grad, bindings=BIND, **policy)
    assert r.changed and r.stats["recomputed_nodes"] > 0
    verify(r.graph)
    assert_identical(mlp_grad, r.graph)
    # dropout is recomputed too (k=1 keeps every layer output): the counter-based RNG
    # redraws the same mask
    clones = [n for n in r.graph.nodes if n.name.startswith(REMAT_PREFIX)]
    assert policy.get("k") == 1 or any(n.op is ops.dropout for n in clones)


def test_conv_net_gradients_bit_identical() -> None:
    g = grad(conv_net())
    r = rematerialize(g, policy="every_k", k=2, bindings=BIND)
    assert r.changed
    verify(r.graph)
    assert_identical(g, r.graph)
    assert {n.op for n in r.graph.nodes if n.name.startswith(REMAT_PREFIX)} >= {ops.conv, ops.relu}
    assert r.report is not None and r.report.activation_peak_after < r.report.activation_peak_before


def test_train_step_same_state_and_state_readers_not_recomputed() -> None:
    ts = make_train_step(deep_mlp(layers=8), SGD(lr=0.1))
    r = rematerialize(ts.graph, bindings=BIND)
    assert r.changed
    feeds = {**feeds_for(deep_mlp(layers=8)), **ts.initial_state}
    feeds.pop("key")  # the step builds the dropout key from the step counter
    want, got = Interpreter(ts.graph).run(feeds), Interpreter(r.graph).run(feeds)
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w, err_msg=name)
    clones = [n for n in r.graph.nodes if n.name.startswith(REMAT_PREFIX)]
    step = ts.graph.input("step")
    assert clones and all(step not in n.inputs for n in clones)
    assert "remat/rng/reshape" not in r.graph.node_map  # reads the step counter: kept alive


def test_readers_of_state_buffers_are_not_recomputed() -> None:
    rng = np.random.default_rng(3)
    with GraphBuilder("buffers") as b:
        x = b.input("x", "f32", ("N", 8))
        shift = b.param("shift", np.ones(8, np.float32), trainable=False)
        h = x
        for i in range(6):
            with b.scope(f"layers.{i}"):
                h = ops.matmul(h, b.param(f"layers.{i}.w", rng.standard_normal((8, 8))
                                          .astype(np.float32) * 0.3))
                h = ops.tanh(ops.add(h, shift) if i == 1 else h)
        b.metadata["state_updates"] = {"shift": "shift_next"}
        loss = ops.reduce_mean(ops.mul(h, h), axes=None, keepdims=False)
        g = grad(b.build({"loss": loss, "shift_next": ops.mul(shift, shift)}))
    r = rematerialize(g, policy="every_k", k=4)
    assert "layers.1/tanh" in r.graph.metadata["remat"]["dropped"]
    assert "remat/layers.1/tanh" in r.graph.node_map  # recomputed from the kept add output
    assert "remat/layers.1/add" not in r.graph.node_map  # reads the buffer: never recomputed
    assert "remat/layers.1/matmul" not in r.graph.node_map
    assert_identical(g, r.graph)


def test_graph_without_scopes_has_one_layer_per_node() -> None:
    with GraphBuilder("flat") as b:
        h = b.input("x", "f32", ("N", 4))
        w = b.param("w", np.eye(4, dtype=np.float32) * 0.9)
        for _ in range(8):
            h = ops.sigmoid(ops.matmul(h, w))
        g = grad(b.build({"loss": ops.reduce_sum(h, axes=None, keepdims=False)}))
    r = rematerialize(g, bindings=BIND)
    assert r.stats["layers"] == 18 and r.stats["checkpoints"] == 4  # 16 + reduce_sum + loss
    assert r.report is not None and r.report.activation_peak_after < r.report.activation_peak_before
    assert_identical(g, r.graph)


def test_clone_names_sources_and_placement(mlp_grad: Graph) -> None:
    r = rematerialize(mlp_grad, bindings=BIND)
    nodes = r.graph.nodes
    index = {n: i for i, n in enumerate(nodes)}
    for i, n in enumerate(nodes):
        if not n.name.startswith(REMAT_PREFIX):
            continue
        original = mlp_grad.node_map[n.name[len(REMAT_PREFIX):]]
        assert n.op is original.op and n.source == original.source and n.source is not None
        assert dict(n.attrs) == dict(original.attrs)
        # right before its first reader: only other clones in between
        first = min(index[c] for c in r.graph.consumers[n.output])
        assert all(m.name.startswith(REMAT_PREFIX) for m in nodes[i + 1:first])
        assert nodes[first].name.startswith(("grad/", REMAT_PREFIX))
    # no gradient node reads a dropped activation any more
    dropped = {mlp_grad.values[name] for name in r.graph.metadata["remat"]["dropped"]}
    assert dropped and all(not (set(n.inputs) & dropped) for n in nodes
                           if n.name.startswith("grad"))


# ---------------------------------------------------------------- memory and policies


def test_peak_memory_lower_after_remat(mlp_grad: Graph) -> None:
    r = rematerialize(mlp_grad, bindings=BIND)
    rep = r.report
    assert rep is not None and rep == remat_report(mlp_grad, r.graph, BIND)
    assert rep.activation_peak_after * 2.5 <= rep.activation_peak_before
    assert rep.peak_bytes_after < rep.peak_bytes_before
    assert rep.recomputed_nodes == r.stats["recomputed_nodes"]
    clones = [n for n in r.graph.nodes if n.name.startswith(REMAT_PREFIX)]
    assert rep.extra_flops == sum(flops(n, BIND) for n in clones) > 0
    assert 1.0 < rep.flops_ratio < 1.5
    assert "checkpoints" in str(rep)


@pytest.mark.parametrize("layers", [9, 16, 36, 64])
def test_sqrt_policy_keeps_about_sqrt_n_checkpoints(layers: int) -> None:
    g = grad(deep_mlp(layers=layers, width=4, dropout=0.0))
    r = rematerialize(g, bindings=BIND)
    assert abs(r.stats["checkpoints"] - math.sqrt(layers)) <= 1
    assert r.stats["layers"] == layers + 1  # the layers and the loss
    assert len(r.graph.metadata["remat"]["checkpoints"]) == r.stats["checkpoints"]


def test_every_k_checkpoints(mlp_grad: Graph) -> None:
    counts = [rematerialize(mlp_grad, policy="every_k", k=k).stats["checkpoints"]
              for k in (1, 2, 4, 8)]
    assert counts == [16, 8, 4, 2]
    meta = rematerialize(mlp_grad, policy="every_k", k=4).graph.metadata["remat"]
    # counted back from the loss: the last segment, which the backward needs first, is kept
    assert meta["checkpoints"] == [f"layers.{i}/dropout" for i in (0, 4, 8, 12)]
    assert not [v for v in meta["dropped"] if v.startswith(("layers.13/", "layers.15/"))]
    big = rematerialize(mlp_grad, policy="every_k", k=17)  # no layer boundary left to keep
    assert not big.changed and big.graph is mlp_grad


def test_budget_policy_meets_budget_or_raises(mlp_grad: Graph) -> None:
    base = peak_memory(mlp_grad, BIND, include=activation_values(mlp_grad).__contains__)
    for fraction in (0.6, 0.4):
        budget = int(base * fraction)
        r = rematerialize(mlp_grad, policy="budget", budget_bytes=budget, bindings=BIND)
        assert r.changed and r.report is not None
        assert r.report.activation_peak_after <= budget
    loose = rematerialize(mlp_grad, policy="budget", budget_bytes=base, bindings=BIND)
    assert not loose.changed and loose.graph is mlp_grad
    with pytest.raises(RematError, match="cannot be met") as info:
        rematerialize(mlp_grad, policy="budget", budget_bytes=base // 20, bindings=BIND)
    assert f"{base:,} bytes without" in info.value.message
    with pytest.raises(RematError, match="bindings"):
        rematerialize(mlp_grad, policy="budget", budget_bytes=1000)


def test_idempotent(mlp_grad: Graph) -> None:
    for kwargs in ({"policy": "sqrt"}, {"policy": "every_k", "k": 2},
                   {"policy": "budget", "budget_bytes": 80_000, "bindings": BIND}):
        once = rematerialize(mlp_grad, **kwargs)  # type: ignore[arg-type]
        again = rematerialize(once.graph, **kwargs)  # type: ignore[arg-type]
        assert once.changed and not again.changed and again.graph is once.graph
        assert again.stats["recomputed_nodes"] == 0


def test_forward_only_graph_and_bad_arguments(mlp_grad: Graph) -> None:
    fwd = deep_mlp(layers=2)
    r = rematerialize(fwd)
    assert not r.changed and r.graph is fwd
    for kwargs, pattern in (({"policy": "every_k"}, "needs an integer k"),
                            ({"policy": "every_k", "k": 0}, "needs an integer k"),
                            ({"policy": "sqrt", "k": 2}, "only used by policy 'every_k'"),
                            ({"policy": "budget"}, "budget_bytes > 0"),
                            ({"policy": "lru"}, "unknown remat policy")):
        with pytest.raises(RematError, match=pattern):
            rematerialize(mlp_grad, **kwargs)  # type: ignore[arg-type]
    assert rematerialize(mlp_grad).report is None  # N unbound: no report, still rewritten


# ---------------------------------------------------------------- the cost model


def measured_peak(graph: Graph, include: Callable[[Value], bool] | None = None) -> int:
    """Live bytes in node order from the interpreter's profile (real output sizes)."""
    interp = Interpreter(graph, profile=True)
    interp.run(feeds_for(graph))
    prof = interp.last_profile
    assert [p.node for p in prof] == [n.name for n in graph.nodes]
    size: dict[Value, int] = {}
    live = peak = 0
    for node, p, dead in zip(graph.nodes, prof, last_uses(graph), strict=True):
        # out_bytes is the total of the node's outputs: share it by declared sizes (max_pool)
        declared = [value_bytes(v, BIND) for v in node.outputs]
        assert sum(declared) == p.out_bytes, node.name
        for v, nbytes in zip(node.outputs, declared, strict=True):
            if include is None or include(v):
                size[v] = nbytes if len(declared) > 1 else p.out_bytes
                live += size[v]
        peak = max(peak, live)
        for u in dead:
            live -= size.pop(u, 0)
    return peak


@pytest.mark.parametrize("make", [lambda: grad(deep_mlp()), lambda: grad(conv_net())])
def test_peak_memory_matches_interpreter_profile(make: Callable[[], Graph]) -> None:
    g = make()
    r = rematerialize(g, policy="every_k", k=2)
    for graph in (g, r.graph):
        acts = activation_values(graph).__contains__
        assert peak_memory(graph, BIND) == measured_peak(graph)
        assert peak_memory(graph, BIND, include=acts) == measured_peak(graph, acts)


def test_real_allocations_drop() -> None:
    g = grad(deep_mlp(width=32))
    r = rematerialize(g, bindings=BIND)
    feeds = feeds_for(g)
    peaks = []
    for graph in (g, r.graph):
        interp = Interpreter(graph)
        interp.run(feeds)
        tracemalloc.start()
        try:
            interp.run(feeds)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 0.6 * peaks[0]


def test_flops_estimator() -> None:
    with GraphBuilder("f") as b:
        x = b.input("x", "f32", ("N", 8))
        w = b.param("w", np.zeros((8, 5), np.float32))
        img = b.input("img", "f32", ("N", 3, "H", "H"))
        k = b.param("k", np.zeros((4, 3, 3, 3), np.float32))
        mm = ops.matmul(x, w)
        t = ops.tanh(mm)
        s = ops.reduce_sum(t, axes=(1,), keepdims=False)
        r = ops.reshape(t, shape=(-1,))
        c = ops.conv(img, k, None, strides=(2, 2))
        g = b.build([s, r, c])
    by_op = {n.op.name: flops(n, {"N": 2, "H": 9}) for n in g.nodes}
    assert by_op == {"matmul": 2 * 2 * 5 * 8, "tanh": 10, "reduce_sum": 10, "reshape": 0,
                     "conv": 2 * (2 * 4 * 4 * 4) * 27}
    assert dim_value(c.shape[2], {"H": 9}) == 4  # "(H-3)//2+1"
    with pytest.raises(ShapeError, match=r"'N' .* not bound"):
        flops(g.nodes[0], {})
