"""constant_causal_masks: static causal masks become constants and the masking ``where`` a bias;
the forward, its gradients and a GPT train step stay equal (1e-5) on NumPy and ONNX Runtime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.frontends import functional as F
from lbdl_graph.frontends.tensor import Tensor
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.constant_causal_masks import constant_causal_masks

L = 7


def attention_graph(batch: int | str = 2, length: int | str = L) -> Graph:
    """loss = sum(causal attention(q, k, v) * cot), over (batch, 2 heads, length, 4)."""
    b = GraphBuilder("causal")
    q, k, v, cot = (b.input(n, "f32", (batch, 2, length, 4)) for n in ("q", "k", "v", "cot"))
    with b:
        out, _ = F.attention(Tensor(q), Tensor(k), Tensor(v), is_causal=True)
        loss = ops.reduce_sum(ops.mul(out.value, cot), axes=None, keepdims=False)
    return b.build({"loss": loss, "out": out.value})


def feeds(batch: int = 2, length: int = L) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal((batch, 2, length, 4)).astype(np.float32) * 3
            for n in ("q", "k", "v", "cot")}


def ops_of(g: Graph) -> Counter[str]:
    return Counter(n.op.name for n in g.nodes)


def test_mask_becomes_a_bias_constant() -> None:
    g = attention_graph()
    res = constant_causal_masks(g)
    assert res.stats == {"causal_keep_constant": 1, "masked_softmax_bias": 1}
    after = ops_of(res.graph)
    assert after["iota_like"] == after["where"] == after["less_equal"] == 0
    assert after["add"] == ops_of(g)["add"] + 1
    assert not constant_causal_masks(res.graph).changed  # idempotent


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_forward_and_gradients_unchanged(backend: str) -> None:
    before = grad(attention_graph(), "loss", ["q", "k", "v"])
    after = grad(constant_causal_masks(attention_graph()).graph, "loss", ["q", "k", "v"])
    assert ops_of(after)["where"] == 0  # the backward has no where either
    f = feeds()
    run = (lambda g: Interpreter(g).run(f)) if backend == "numpy" else \
        (lambda g: OrtRunner(g, providers="cpu").run(f))
    want, got = run(before), run(after)
    for name in ("loss", "out", "grad:q", "grad:k", "grad:v"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_symbolic_length_keeps_the_dynamic_mask() -> None:
    g = attention_graph(batch="N", length="T")
    res = constant_causal_masks(g)
    assert res.stats == {}  # no static (L, S): nothing folds
    assert ops_of(res.graph)["iota_like"] == 2


def test_non_causal_where_is_left_alone() -> None:
    b = GraphBuilder("plain")
    s = b.input("s", "f32", (3, 5))
    keep = b.input("keep", "bool", (3, 5))
    with b:
        low = ops.constant(value=np.float32(np.finfo(np.float32).min))
        y = ops.softmax(ops.where(keep, s, low), axis=-1)  # keep is an input, not a constant
    assert not constant_causal_masks(b.build({"y": y})).changed


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_gpt_gradients_unchanged(backend: str) -> None:
    from lbdl_graph.frontends import InputSpec
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.frontends.zoo import ZOO

    spec = InputSpec(("N", 64), "int64")
    fwd = trace_loss(ZOO["gpt_mini"].model(), {"idx": spec}, spec, "cross_entropy", {},
                     training=True)
    folded = constant_causal_masks(fwd)
    assert folded.stats["masked_softmax_bias"] == 4  # one per layer, batch symbolic
    before, after = grad(fwd), grad(folded.graph)
    rng = np.random.default_rng(3)
    f = {"idx": rng.integers(0, 96, (2, 64)), "y": rng.integers(0, 96, (2, 64))}
    run = (lambda g: Interpreter(g).run(f)) if backend == "numpy" else \
        (lambda g: OrtRunner(g, providers="cpu").run(f))
    want, got = run(before), run(after)
    assert set(got) == set(want) and len(want) > 10
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6, err_msg=name)


def test_train_step_has_constant_masks() -> None:
    from lbdl_graph.frontends import InputSpec
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.frontends.zoo import ZOO
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    spec = InputSpec(("N", 64), "int64")
    fwd = trace_loss(ZOO["gpt_mini"].model(), {"idx": spec}, spec, "cross_entropy", {},
                     training=True)
    counts = ops_of(make_train_step(fwd, Adam(1e-3)).graph)
    plain = ops_of(grad(fwd))  # 4 masking wheres forward, 4 backward, and the loss's
    assert counts["iota_like"] == 0 and counts["where"] == plain["where"] - 8
