"""In-place execution and memory planning on the NumPy interpreter."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import KERNELS, Interpreter
from lbdl_graph.backends.numpy import inplace as inplace_mod
from lbdl_graph.backends.numpy.inplace import UFUNCS, make_inplace, plan_inplace
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.frontends import InputSpec, manual_seed, nn
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.plan_memory import planned_peak
from lbdl_graph.passes.train_step import make_train_step

S = 96  # f32[S,S] is 36 KiB, above INPLACE_MIN_BYTES
UNARY = (ops.exp, ops.tanh, ops.sigmoid, ops.relu, ops.neg, ops.abs_, ops.sqrt, ops.log,
         ops.softplus, ops.sin, ops.floor)
BINARY = (ops.add, ops.sub, ops.mul, ops.div, ops.maximum, ops.minimum)
INT_UNARY = (ops.neg, ops.abs_)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape, layout and bytes (NaN payloads included)."""
    return (a.dtype == b.dtype and a.shape == b.shape and a.strides == b.strides
            and a.tobytes() == b.tobytes())


def _specials(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f":
        x.flat[:5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    return x


# ------------------------------------------------------------------ the ufunc table vs kernels


@pytest.mark.parametrize("op", list(UFUNCS), ids=lambda op: op.name)
def test_inplace_call_matches_kernel_bit_for_bit(op: Any) -> None:
    spec = UFUNCS[op]
    rng = np.random.default_rng(0)
    for dt in sorted(spec.dtypes, key=str):
        if dt.kind == "f":
            args = [_specials((rng.standard_normal((67, 129)) * 20).astype(dt))
                    for _ in range(spec.arity)]
        else:
            args = [rng.integers(-100, 100, (67, 129)).astype(dt) for _ in range(spec.arity)]
        with np.errstate(all="ignore"):
            want = KERNELS[op](*args)
            for k in range(spec.arity):
                dst = [a.copy() for a in args]
                got = (spec.ufunc(dst[0], dt.type(spec.const), out=dst[0])
                       if spec.const is not None else spec.ufunc(*dst, out=dst[k]))
                assert got is dst[k] and same_bits(got, want), (op.name, dt, k)


# ------------------------------------------------------------------------- random graphs


def random_graph(seed: int, *, integer: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    """A random elementwise graph over f32 (or i32) [S,S] or [N,S] values with views,
    broadcasts, pass-through kernels, parameters and inputs read twice; and its feeds."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    dt = np.int32 if integer else np.float32
    shape: tuple[Any, ...] = ("N", S) if seed % 3 == 0 else (S, S)

    def data(*shp: int) -> np.ndarray:
        if integer:
            return rng.integers(-50, 50, shp).astype(dt)
        return (rng.standard_normal(shp) * 2).astype(dt)

    fixed = shape[0] == S
    with GraphBuilder(f"rand{seed}") as b:
        bias = b.param("bias", data(S))
        pool = [b.input("x", dt, shape), b.input("z", dt, shape)]
        if fixed:
            pool += [b.param("w", data(S, S)), ops.expand(bias, shape=(S, S))]
        first = len(pool)
        for _ in range(r.randint(8, 20)):
            kind = r.random()
            u = pool[-1] if r.random() < 0.5 else r.choice(pool)  # chains die young
            v = r.choice(pool)
            if kind < 0.3:
                ops_u = INT_UNARY if integer else UNARY
                y = r.choice(ops_u)(u)
            elif kind < 0.6:
                op = r.choice(BINARY[:3] + BINARY[4:] if integer else BINARY)
                y = op(u, r.choice([v, u, bias]))
            elif kind < 0.7 and fixed:
                y = ops.transpose(u, perm=(1, 0))
            elif kind < 0.75 and fixed:
                y = ops.reshape(ops.reshape(u, shape=(-1,)), shape=(-1, S))
            elif kind < 0.8:
                y = ops.slice_(u, starts=(-1,), ends=(-(2**31),), axes=(1,), steps=(-1,))
            elif kind < 0.9:
                y = r.choice([ops.identity, ops.stop_gradient])(u)
            else:
                y = ops.clip(u)  # no bounds: the kernel returns its input (unknown to the plan)
            pool.append(y)
        outs = [pool[-1], *r.sample(pool[first:], 2)]
        graph = b.build(list(dict.fromkeys(outs)))
    n = S if shape[0] == S else 40
    return graph, {"x": data(n, S), "z": data(n, S)}


def _check_on_off(graph: Graph, feeds: dict[str, np.ndarray], **options: Any) -> int:
    """Run with in-place on and off; assert bit-identical outputs and untouched inputs and
    parameters; returns how many nodes ran in place."""
    saved = {k: v.copy() for k, v in feeds.items()}
    params = {p.name: p.data.copy() for p in graph.params}
    off = Interpreter(graph, inplace=False, **options).run(feeds)
    on_interp = Interpreter(graph, inplace=True, profile=True, **options)
    on = on_interp.run(feeds)
    again = Interpreter(graph, **options).run(feeds)  # the fast loop
    for name in off:
        assert same_bits(on[name], off[name]) and same_bits(again[name], off[name]), name
    for k, v in feeds.items():
        assert same_bits(v, saved[k]), f"input {k} was overwritten"
    for p in graph.params:
        assert same_bits(p.data, params[p.name]), f"param {p.name} was overwritten"
    return sum(p.inplace for p in on_interp.last_profile)


def test_random_graphs_bit_identical_and_inputs_untouched() -> None:
    ran = 0
    with np.errstate(all="ignore"):
        for seed in range(40):
            ran += _check_on_off(*random_graph(seed))
            ran += _check_on_off(*random_graph(seed, integer=True))
    assert ran > 40  # the in-place path is exercised


def test_run_time_check_alone_keeps_views_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    # A plan blind to views and pass-through kernels: only the reference count stops a write
    monkeypatch.setattr(inplace_mod, "may_alias", lambda node, training=True: False)
    ran = 0
    with np.errstate(all="ignore"):
        for seed in range(40):
            ran += _check_on_off(*random_graph(seed))
    assert ran > 40


def test_identity_of_an_input_is_never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inplace_mod, "may_alias", lambda node, training=True: False)
    with GraphBuilder("pass") as b:
        x = b.input("x", "f32", (S, S))
        w = b.param("w", np.ones((S, S), np.float32))
        g = b.build([ops.add(ops.exp(ops.identity(x)), ops.neg(ops.clip(w)))])
    assert len(plan_inplace(g)) == 3  # blind plan: exp and neg try, the check refuses
    x0 = np.random.default_rng(0).standard_normal((S, S)).astype(np.float32)
    assert _check_on_off(g, {"x": x0}) == 1  # only the final add (into exp's fresh result)


def test_dropout_in_evaluation_mode_is_a_view() -> None:
    with GraphBuilder("drop") as b:
        x = b.input("x", "f32", (S, S))
        key = b.input("key", "i64", (2,))
        h = ops.exp(x)
        d = ops.dropout(h, key, ratio=0.5)
        g = b.build([ops.tanh(h), ops.relu(d)])
    feeds = {"x": np.ones((S, S), np.float32), "key": np.array([1, 2])}
    assert plan_inplace(g, training=False) == {}  # h lives on as d and as tanh's input
    assert 2 in plan_inplace(g, training=True)  # dropout makes a fresh array: tanh may write
    for training in (True, False):
        _check_on_off(g, feeds, training=training)


def test_input_used_twice_and_plan_conditions() -> None:
    with GraphBuilder("twice") as b:
        x = b.input("x", "f32", (S, S))
        small = b.input("s", "f32", (8,))
        u = ops.exp(x)
        y = ops.mul(u, u)  # u dies here, read twice: may be overwritten
        t = ops.add(ops.sqrt(y), ops.exp(x))  # the sqrt result dies here
        e = ops.exp(x)
        view = ops.transpose(e, perm=(1, 0))
        w = ops.neg(e)  # e dies here, but its transposed view lives on: never overwritten
        g = b.build([ops.add(t, x), ops.exp(ops.neg(small)), ops.sub(w, view)])
    plan = plan_inplace(g)
    names = {g.nodes[i].name: p for i, p in plan.items()}
    assert names == {"mul": (0,), "sqrt": (0,), "add": (0, 1), "add_1": (0,), "sub": (0,)}
    feeds = {"x": np.full((S, S), 0.5, np.float32), "s": np.ones(8, np.float32)}
    assert _check_on_off(g, feeds) == 5
    assert Interpreter(g, inplace=False).inplace_nodes() == []


# --------------------------------------------------------------------- the run-time check


def test_run_time_check_refuses_shared_views_and_foreign_arrays() -> None:
    with GraphBuilder("one") as b:
        x = b.input("x", "f32", (S, S))
        g = b.build([ops.exp(ops.neg(x))])
    node = g.nodes[1]
    fn = make_inplace(node, KERNELS[ops.exp], (0,), (0,))
    base = np.zeros((S, S), np.float32)
    cases: dict[str, tuple[Any, bool]] = {
        "owned": (lambda: np.zeros((S, S), np.float32), True),
        "held elsewhere": (lambda: base, False),
        "view of a temporary": (lambda: np.zeros((S, 2 * S), np.float32)[:, :S], False),
        "transposed": (lambda: np.zeros((S, S), np.float32).T.copy(order="F"), False),
        "read-only": (_readonly, False),
        "float64": (lambda: np.zeros((S, S)), False),
    }
    for name, (make, expect) in cases.items():
        env: list[Any] = [make()]
        arr_id = id(env[0])
        out = fn(env)
        assert (id(out) == arr_id) is expect, name
        assert np.array_equal(out, np.ones((S, S))), name
    assert not base.any()
    with GraphBuilder("two") as b:
        x = b.input("x", "f32", (S, S))
        g = b.build([ops.add(ops.neg(x), ops.exp(x))])
    add = make_inplace(g.nodes[2], KERNELS[ops.add], (0, 1), (0, 1))
    other = np.ones((S, S))  # float64: writing into the float32 operand would cast
    env = [np.zeros((S, S), np.float32), other]
    assert add(env).dtype == np.float64 and not env[0].any()
    env = [np.zeros((S, S), np.float32), np.ones((S, S), np.float32).T]  # F layout operand
    out = add(env)
    assert out is env[0] and out.flags.c_contiguous and out.all()


def _readonly() -> np.ndarray:
    a = np.zeros((S, S), np.float32)
    a.flags.writeable = False
    return a


def test_a_view_alive_elsewhere_blocks_the_write() -> None:
    with GraphBuilder("e") as b:
        x = b.input("x", "f32", (S, S))
        g = b.build([ops.exp(ops.neg(x))])
    fn = make_inplace(g.nodes[1], KERNELS[ops.exp], (0,), (0,))
    env: list[Any] = [np.zeros((S, S), np.float32)]
    view = env[0][1:]
    out = fn(env)
    assert out is not env[0] and not view.any()
    del view
    assert fn(env) is env[0]  # the view is gone: now the write happens


# ----------------------------------------------------------------------- training steps


def _mlp_step(seed: int = 0) -> Any:
    manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.Tanh(),
                          nn.Linear(128, 10))
    fwd = trace_loss(model, {"x": InputSpec(("N", 64))}, InputSpec(("N",), "i64"),
                     "cross_entropy", {}, training=True)
    return make_train_step(fwd, Adam(1e-2))


def test_train_step_bit_identical_with_inplace() -> None:
    step = _mlp_step()
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(32, 64)).astype(np.float32),
                "y": rng.integers(0, 10, 32)} for _ in range(3)]
    initial = {k: v.copy() for k, v in step.initial_state.items()}
    runners = [NumpyStepRunner(step.graph, step.info.state, step.initial_state, inplace=flag)
               for flag in (False, True)]
    for batch in batches:
        losses = [r.step(batch)["loss"] for r in runners]
        assert same_bits(losses[0], losses[1])
    states = [r.state() for r in runners]
    for k in states[0]:
        assert same_bits(states[0][k], states[1][k]), k
    for k, v in initial.items():
        assert same_bits(step.initial_state[k], v), f"initial state {k} was overwritten"
    interp = Interpreter(step.graph, profile=True)
    interp.run({**batches[0], **step.initial_state})
    assert sum(p.inplace for p in interp.last_profile) >= 10


# ------------------------------------------------------------------------- memory figures


def _chain(n: int = 6) -> Graph:
    with GraphBuilder("chain") as b:
        x = b.input("x", "f32", ("N", 1024))
        y = ops.exp(x)
        for _ in range(n):
            y = ops.tanh(ops.mul(ops.add(y, x), y))
        return b.build([y])


def traced_peak(run: Callable[[], Any]) -> int:
    run()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_inplace_lowers_the_measured_peak_of_an_elementwise_chain() -> None:
    g = _chain()
    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    mib = 2**20  # one value
    on, off = Interpreter(g), Interpreter(g, inplace=False)
    peak_on, peak_off = (traced_peak(lambda i=i: i.run({"x": x})) for i in (on, off))
    assert peak_on < peak_off - 0.9 * mib
    rep_on, rep_off = on.memory_report({"N": 256}), off.memory_report({"N": 256})
    assert rep_on.planned_peak == 2 * mib and rep_off.planned_peak == 3 * mib
    assert rep_on.planned_peak_no_inplace == 3 * mib and rep_off.inplace_nodes == 0
    assert rep_on.inplace_nodes == 12 and rep_on.liveness_peak == 3 * mib
    assert planned_peak(g, {"N": 256}) == 2 * mib == rep_on.arena  # plan_memory's own hints
    for rep, peak in ((rep_on, peak_on), (rep_off, peak_off)):
        assert 0.95 < rep.planned_peak / peak <= 1.0


def _conv_step() -> Any:
    manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 13 * 13, 10))
    fwd = trace_loss(model, {"x": InputSpec(("N", 1, 28, 28))}, InputSpec(("N",), "i64"),
                     "cross_entropy", {}, training=True)
    return make_train_step(fwd, Adam(1e-3))


@pytest.mark.parametrize("make", [_mlp_step, _conv_step], ids=["mlp", "conv"])
def test_planned_peak_close_to_measured(make: Callable[[], Any]) -> None:
    step = make()
    rng = np.random.default_rng(0)
    xshape = (16, 64) if make is _mlp_step else (16, 1, 28, 28)
    feeds = {"x": rng.normal(size=xshape).astype(np.float32), "y": rng.integers(0, 10, 16),
             **step.initial_state}
    results = []
    for flag in (True, False):
        interp = Interpreter(step.graph, inplace=flag)
        report = interp.memory_report({"N": 16})
        peak = traced_peak(lambda i=interp: i.run(feeds))
        results.append(interp.run(feeds))
        assert 0.6 < report.planned_peak / peak < 1.1, (flag, report, peak)
        assert report.planned_peak <= report.planned_peak_no_inplace <= report.no_reuse
        assert report.planned_peak <= report.liveness_peak
    for name, value in results[0].items():
        assert same_bits(value, results[1][name]), name


def test_planned_peak_counts_views_once() -> None:
    with GraphBuilder("views") as b:
        x = b.input("x", "f32", (4, 8))
        e = ops.exp(x)
        t = ops.transpose(e, perm=(1, 0))
        g = b.build([ops.add(ops.transpose(t, perm=(1, 0)), e)])
    views = {ops.transpose}.__contains__
    assert planned_peak(g, aliases=lambda n: views(n.op), in_place={}) == 2 * 128
    assert planned_peak(g, in_place={}) == 3 * 128  # without aliasing every value counts
    assert planned_peak(g, aliases=lambda n: views(n.op), in_place={"add": 1}) == 128
