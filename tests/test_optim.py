"""Optimizer updates and schedules built as graph ops vs their closed forms (PyTorch semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.passes.optim import (
    SGD,
    Adam,
    AdamW,
    CosineLR,
    Optimizer,
    StepLR,
    WarmupLR,
    clip_by_global_norm,
)

RNG = np.random.default_rng(0)
P = RNG.normal(size=(3, 4)).astype(np.float32)
G = RNG.normal(size=(3, 4)).astype(np.float32)


def one_update(opt: Optimizer, state: dict[str, np.ndarray], step: int, lr: float
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run opt.update once as a graph."""
    with GraphBuilder("upd") as b:
        p = b.input("p", "f32", P.shape)
        g = b.input("g", "f32", P.shape)
        s = {k: b.input(k, "f32", P.shape) for k in opt.slots()}
        t = b.input("step", "i64", ())
        new_p, new_s = opt.update(p, g, s, t, ops.constant(value=np.float32(lr)))
        graph = b.build({"p:next": new_p, **{f"{k}:next": v for k, v in new_s.items()}})
    out = run(graph, {"p": P, "g": G, "step": np.array(step), **state})
    return out["p:next"], {k: out[f"{k}:next"] for k in opt.slots()}


def test_sgd_plain_and_weight_decay() -> None:
    p, _ = one_update(SGD(lr=0.1, weight_decay=0.01), {}, 0, 0.1)
    np.testing.assert_allclose(p, P - 0.1 * (G + 0.01 * P), rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum(nesterov: bool) -> None:
    buf0 = RNG.normal(size=P.shape).astype(np.float32)
    p, s = one_update(SGD(lr=0.1, momentum=0.9, nesterov=nesterov), {"momentum": buf0}, 3, 0.1)
    buf = 0.9 * buf0 + G
    d = G + 0.9 * buf if nesterov else buf
    np.testing.assert_allclose(s["momentum"], buf, rtol=1e-6)
    np.testing.assert_allclose(p, P - 0.1 * d, rtol=1e-6)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_adamw(decoupled: bool) -> None:
    m0 = RNG.normal(size=P.shape).astype(np.float32) * 0.1
    v0 = np.abs(RNG.normal(size=P.shape)).astype(np.float32) * 0.1
    opt = AdamW(lr=1e-2, weight_decay=0.1) if decoupled else Adam(lr=1e-2, weight_decay=0.1)
    step = 4
    p, s = one_update(opt, {"m": m0, "v": v0}, step, 1e-2)
    g = G if decoupled else G + 0.1 * P
    m = 0.9 * m0 + 0.1 * g
    v = 0.999 * v0 + 0.001 * g * g
    t = step + 1
    upd = 1e-2 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    want = P - upd - (1e-2 * 0.1 * P if decoupled else 0)
    np.testing.assert_allclose(s["m"], m, rtol=1e-5)
    np.testing.assert_allclose(s["v"], v, rtol=1e-5)
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "sched",
    [StepLR(0.1, step_size=3, gamma=0.5), CosineLR(0.1, total_steps=10, min_lr=0.01),
     WarmupLR(CosineLR(0.1, total_steps=10), warmup_steps=4)],
    ids=["step", "cosine", "warmup-cosine"],
)
def test_schedules_graph_matches_python(sched) -> None:  # type: ignore[no-untyped-def]
    with GraphBuilder("lr") as b:
        t = b.input("step", "i64", ())
        g = b.build({"lr": sched(t)})
    for step in range(0, 14):
        got = float(run(g, {"step": np.array(step)})["lr"])
        assert math.isclose(got, sched.value(step), rel_tol=1e-5, abs_tol=1e-7)


def test_cosine_closed_form() -> None:
    s = CosineLR(1.0, total_steps=4)
    assert [round(s.value(i), 6) for i in range(5)] == [1.0, 0.853553, 0.5, 0.146447, 0.0]


def test_clip_by_global_norm() -> None:
    a = RNG.normal(size=(5,)).astype(np.float32)
    c = RNG.normal(size=(2, 2)).astype(np.float32)
    with GraphBuilder("clip") as b:
        ga, gc = b.input("a", "f32", a.shape), b.input("c", "f32", c.shape)
        clipped, norm = clip_by_global_norm({"a": ga, "c": gc}, max_norm=1.0)
        g = b.build({"a:c": clipped["a"], "c:c": clipped["c"], "norm": norm})
    out = run(g, {"a": a, "c": c})
    total = np.sqrt((a**2).sum() + (c**2).sum())
    coef = min(1.0, 1.0 / (total + 1e-6))
    np.testing.assert_allclose(out["norm"], total, rtol=1e-5)
    np.testing.assert_allclose(out["a:c"], a * coef, rtol=1e-5)
    np.testing.assert_allclose(out["c:c"], c * coef, rtol=1e-5)
