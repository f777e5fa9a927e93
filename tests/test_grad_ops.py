"""Registry-driven gradient checks: every VJP rule against central finite differences.

For each OP_DB sample of a differentiable op with ``grad=True`` the float inputs become float64,
the graph is ``loss = sum_j sum(out_j * cot_j)`` with random cotangents, and ``grad`` must match
central differences along a random direction and, for inputs with at most 30 elements, the full
finite-difference gradient. Kinks are detected, not assumed away: an element whose difference
quotient changes with the step size is skipped. A subset of ops is checked to second order
(Hessian-vector products against differences of the gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.dtypes import dtype
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import VJPS, grad
from tests.op_db import OP_DB, OpSample

Feeds = dict[str, np.ndarray]


def _differentiable_sample(s: OpSample) -> bool:
    """A differentiable op's sample with a non-empty float input to differentiate."""
    if not (s.op.differentiable and s.grad):
        return False
    args = s.make(np.random.default_rng(0))
    floats = [a for a in args if a is not None and dtype(a.dtype).is_float]
    if not all(np.isfinite(a.astype(np.float64)).all() for a in floats):
        return False  # inf/nan samples test the kernels, not derivatives
    picked = s.grad_inputs if s.grad_inputs is not None else range(len(args))
    return any(args[i] is not None and dtype(args[i].dtype).is_float and args[i].size
               for i in picked)


def _away_from_zero(*shape: int) -> Any:
    """Random floats with |x| in [0.2, 2]: no kink of relu, abs or leaky_relu nearby."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)


def _distinct(*shape: int) -> Any:
    """A random permutation of well-separated values: no ties for max/min."""
    n = int(np.prod(shape))
    return lambda rng: rng.permutation(np.linspace(-2.0, 2.0, n)).reshape(shape)


def _pair_apart(*shape: int) -> Any:
    """Two operands that differ by at least 0.2 everywhere (no ties for maximum/minimum)."""
    def make(rng: np.random.Generator) -> list[np.ndarray | None]:
        a = rng.standard_normal(shape)
        return [a, a + _away_from_zero(*shape)(rng)]
    return make


def _one(gen: Any) -> Any:
    return lambda rng: [gen(rng)]


# differentiable ops whose OP_DB samples skip gradients (kinks): checked at kink-free points
KINK_FREE = [
    OpSample(ops.relu, _one(_away_from_zero(3, 4)), label="kink_free"),
    OpSample(ops.abs_, _one(_away_from_zero(2, 5)), label="kink_free"),
    OpSample(ops.leaky_relu, _one(_away_from_zero(3, 3)), {"alpha": 0.2}, label="kink_free"),
    OpSample(ops.clip, _one(lambda rng: np.asarray([-1.7, -0.6, 0.3, 0.8, 1.4])),
             {"min": -1.0, "max": 1.0}, label="kink_free"),
    OpSample(ops.clip, _one(lambda rng: np.asarray([-0.9, 0.3, 2.0])), {"min": -0.5},
             label="min_only"),
    OpSample(ops.maximum, _pair_apart(2, 3), label="kink_free"),
    OpSample(ops.minimum, _pair_apart(3, 1), label="kink_free"),
    OpSample(ops.reduce_max, _one(_distinct(3, 4)), {"axes": (1,), "keepdims": False},
             label="kink_free"),
    OpSample(ops.reduce_min, _one(_distinct(2, 3, 2)), {"axes": None, "keepdims": True},
             label="kink_free"),
]
GRAD_SAMPLES = [s for s in OP_DB if _differentiable_sample(s)] + KINK_FREE
SECOND_ORDER_OPS = {
    "exp", "log", "sin", "tanh", "sigmoid", "erf", "softplus", "gelu", "sqrt", "reciprocal",
    "mul", "div", "pow", "matmul", "softmax", "log_softmax", "reduce_sum", "reduce_mean",
    "reduce_prod", "layer_norm", "batch_norm", "conv", "conv_transpose", "avg_pool", "max_pool",
    "reshape", "transpose", "gather", "gather_elements", "scatter_nd", "slice", "pad", "tile",
    "concat", "split", "cumsum", "where", "expand", "dropout",
}
# ops that may appear in a gradient graph without a VJP: their derivative is zero a.e.
LOCALLY_CONSTANT = {ops.sign, ops.round_, ops.constant, ops.full_like, ops.iota_like}


def _is_float(a: np.ndarray) -> bool:
    return dtype(a.dtype).is_float


def build_case(s: OpSample, seed: int = 0) -> tuple[Graph, Feeds, list[str]]:
    """The graph ``loss = sum_j sum(op(...)_j * cot_j)`` in float64, its feeds and wrt names."""
    rng = np.random.default_rng(seed)
    args = s.make(np.random.default_rng(0))
    attrs: dict[str, Any] = dict(s.attrs)
    if s.op is ops.cast and dtype(attrs["to"]).is_float:
        attrs["to"] = "float64"
    b = GraphBuilder(f"vjp_{s.id}")
    feeds: Feeds = {}
    ins = []
    for i, a in enumerate(args):
        if a is None:
            ins.append(None)
            continue
        a = a.astype(np.float64) if _is_float(a) else a
        feeds[f"in{i}"] = a
        ins.append(b.input(f"in{i}", dtype(a.dtype), a.shape))
    with b:
        res = s.op(*ins, **attrs)
        outs = res if isinstance(res, tuple) else (res,)
        terms = []
        for j, o in enumerate(outs):
            if not o.dtype.is_float:
                continue
            feeds[f"cot{j}"] = rng.standard_normal(o.shape)
            cot = b.input(f"cot{j}", "float64", o.shape)
            terms.append(ops.reduce_sum(ops.mul(o, cot), axes=None, keepdims=False))
        loss = terms[0]
        for t in terms[1:]:
            loss = ops.add(loss, t)
    picked = s.grad_inputs if s.grad_inputs is not None else range(len(args))
    wrt = [f"in{i}" for i in picked if args[i] is not None and _is_float(feeds[f"in{i}"])]
    return b.build({"loss": loss}), feeds, wrt


def _loss_fn(graph: Graph, out: str = "loss") -> Any:
    interp = Interpreter(graph)
    return lambda feeds: float(interp.run(feeds)[out])


def central_diff(f: Any, feeds: Feeds, name: str, direction: np.ndarray,
                 eps: float) -> float:
    """(f(x + eps d) - f(x - eps d)) / (2 eps) for input ``name``."""
    hi, lo = dict(feeds), dict(feeds)
    hi[name] = feeds[name] + eps * direction
    lo[name] = feeds[name] - eps * direction
    return (f(hi) - f(lo)) / (2 * eps)


def smooth_diff(f: Any, feeds: Feeds, name: str, direction: np.ndarray,
                eps: float = 1e-5) -> float | None:
    """The directional derivative, or None where two step sizes disagree (a kink)."""
    d1 = central_diff(f, feeds, name, direction, eps)
    d2 = central_diff(f, feeds, name, direction, eps / 4)
    return d2 if abs(d1 - d2) <= 1e-6 * max(1.0, abs(d2)) else None


def check_gradient(f: Any, feeds: Feeds, name: str, g: np.ndarray, rng: np.random.Generator,
                   rtol: float = 1e-6) -> int:
    """Compare ``g`` with finite differences; returns how many checks were made."""
    x = feeds[name]
    assert g.shape == x.shape and g.dtype == x.dtype
    scale = max(1.0, float(np.abs(g).max(initial=0.0)))
    checked = 0
    d = rng.standard_normal(x.shape)
    fd = smooth_diff(f, feeds, name, d)
    if fd is not None:  # |<g, d>| <= |g| |d| sets the scale of the error
        bound = rtol * (float(np.linalg.norm(g) * np.linalg.norm(d)) + 1e-3)
        assert abs(float(np.sum(g * d)) - fd) <= bound, \
            f"directional derivative of {name}: {np.sum(g * d)} vs {fd}"
        checked += 1
    if x.size <= 30:
        for i in range(x.size):
            e = np.zeros(x.size)
            e[i] = 1.0
            fd_i = smooth_diff(f, feeds, name, e.reshape(x.shape))
            if fd_i is not None:
                assert abs(g.flat[i] - fd_i) <= rtol * scale, \
                    f"d loss / d {name}[{i}]: {g.flat[i]} vs {fd_i}"
                checked += 1
    return checked


@pytest.mark.parametrize("s", GRAD_SAMPLES, ids=lambda s: s.id)
def test_vjp_matches_finite_differences(s: OpSample) -> None:
    graph, feeds, wrt = build_case(s)
    if not wrt or all(feeds[n].size == 0 for n in wrt):
        pytest.skip("no float input to differentiate")
    g = grad(graph, "loss", wrt, allow_unused=True)
    grads = Interpreter(g).run(feeds)
    f = _loss_fn(graph)
    rng = np.random.default_rng(1)
    checked = sum(check_gradient(f, feeds, n, grads[f"grad:{n}"], rng) for n in wrt)
    assert checked > 0, "every point was a kink"


@pytest.mark.parametrize("s", GRAD_SAMPLES, ids=lambda s: s.id)
def test_vjp_emits_differentiable_ops(s: OpSample) -> None:
    graph, _, wrt = build_case(s)
    if not wrt:
        pytest.skip("no float input to differentiate")
    g = grad(graph, "loss", wrt, allow_unused=True)
    for n in g.nodes[len(graph.nodes):]:
        if any(o.dtype.is_float for o in n.outputs) and not n.op.differentiable:
            assert n.op in LOCALLY_CONSTANT, f"{n.name} ({n.op.name}) blocks higher-order grads"
        assert n.name.startswith(("grad/", "grad:")), n.name
        if n.op.differentiable and n.op not in VJPS:
            assert n.op.decompose is not None, n.op.name


def _second_order_samples() -> list[OpSample]:
    seen: dict[str, int] = {}
    out = []
    for s in GRAD_SAMPLES:
        if s.op.name in SECOND_ORDER_OPS and seen.get(s.op.name, 0) < 2:
            seen[s.op.name] = seen.get(s.op.name, 0) + 1
            out.append(s)
    return out


def test_second_order_subset_covers_the_listed_ops() -> None:
    assert {s.op.name for s in _second_order_samples()} == SECOND_ORDER_OPS


def test_every_differentiable_op_with_a_rule_is_checked() -> None:
    # fake_quantize's rule is a straight-through estimator, not a derivative: test_autodiff;
    # matmul_nbits takes float32 / float16 x, not this harness's float64: finite differences in
    # tests/quant/test_qat.py
    # if's rule only raises (no gradient through a run-time branch) and loop's needs a constant
    # trip count, not this harness's fed inputs: both in tests/control
    checked = {s.op.name for s in GRAD_SAMPLES} | {"fake_quantize", "matmul_nbits", "if", "loop"}
    assert sorted(op.name for op in VJPS if op.name not in checked) == []


@pytest.mark.parametrize("s", _second_order_samples(), ids=lambda s: s.id)
def test_hvp_matches_finite_differences(s: OpSample) -> None:
    graph, feeds, wrt = build_case(s)
    if not wrt or all(feeds[n].size == 0 for n in wrt):
        pytest.skip("no float input to differentiate")
    g1 = grad(graph, "loss", wrt, allow_unused=True)
    rng = np.random.default_rng(2)
    b = GraphBuilder.from_graph(g1)
    with b:
        terms = []
        for n in wrt:
            feeds[f"v:{n}"] = rng.standard_normal(feeds[n].shape)
            v = b.input(f"v:{n}", "float64", feeds[n].shape)
            terms.append(ops.reduce_sum(ops.mul(g1.values[f"grad:{n}"], v), axes=None,
                                        keepdims=False))
        gv = terms[0]
        for t in terms[1:]:
            gv = ops.add(gv, t)
    g2 = grad(b.build({"gv": gv}), "gv", wrt, allow_unused=True)
    hvp = Interpreter(g2).run(feeds)
    first = Interpreter(g1)
    eps = 1e-5
    base = {k: a for k, a in feeds.items() if not k.startswith("v:")}
    hi, lo = dict(base), dict(base)
    for n in wrt:
        hi[n] = feeds[n] + eps * feeds[f"v:{n}"]
        lo[n] = feeds[n] - eps * feeds[f"v:{n}"]
    up, down = first.run(hi), first.run(lo)
    for n in wrt:
        fd = (up[f"grad:{n}"] - down[f"grad:{n}"]) / (2 * eps)
        got = hvp[g2.metadata["grads"][n]]
        scale = max(1.0, float(np.abs(fd).max(initial=0.0)))
        np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-4 * scale, err_msg=n)
