"""The pass manager: levels, reports, verification and the translation check."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from lbdl_graph import Graph, GraphBuilder, ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.passes.base import PassResult
from lbdl_graph.passes.manager import (
    PASSES,
    PIPELINES,
    PassError,
    TranslationError,
    random_inputs,
    resolve_passes,
    run_passes,
)
from tests.passes.util import assert_same_outputs


def _c(v: float) -> object:
    return ops.constant(value=np.asarray(v, np.float32))


def block() -> Graph:
    """A pre-norm transformer block written with primitive ops only."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("block")
    x = b.input("x", "f32", ("B", 4, 8))
    p = {n: b.param(n, rng.standard_normal(s).astype(np.float32) * 0.3) for n, s in [
        ("ln.g", (8,)), ("ln.b", (8,)), ("qkv.w", (8, 24)), ("qkv.b", (24,)),
        ("fc.w", (8, 16)), ("fc.b", (16,)), ("out.w", (16, 8))]}
    with b:
        m = ops.reduce_mean(x, axes=(-1,), keepdims=True)
        d = ops.sub(x, m)
        var = ops.reduce_mean(ops.mul(d, d), axes=(-1,), keepdims=True)
        h = ops.add(ops.mul(ops.div(d, ops.sqrt(ops.add(var, _c(1e-5)))), p["ln.g"]), p["ln.b"])
        qkv = ops.add(ops.matmul(h, p["qkv.w"]), p["qkv.b"])
        q, k, v = ops.split(qkv, axis=-1, split=(8, 8, 8))
        heads = [ops.transpose(ops.reshape(t, shape=(0, 0, 2, 4)), perm=(0, 2, 1, 3))
                 for t in (q, k, v)]
        s = ops.mul(ops.matmul(heads[0], ops.transpose(heads[1], perm=(0, 1, 3, 2))),
                    _c(0.5))
        mask = ops.constant(value=np.triu(np.full((4, 4), -np.inf, np.float32), 1))
        a = ops.matmul(ops.softmax(ops.add(s, mask), axis=-1), heads[2])
        a = ops.reshape(ops.transpose(a, perm=(0, 2, 1, 3)), shape=(0, 0, 8))
        f = ops.add(ops.matmul(a, p["fc.w"]), p["fc.b"])
        g = ops.mul(ops.mul(f, _c(0.5)), ops.add(ops.erf(ops.div(f, _c(math.sqrt(2)))), _c(1.0)))
        y = ops.add(x, ops.mul(ops.matmul(g, p["out.w"]), _c(1.0)))
    return b.build({"y": y})


@pytest.mark.parametrize("level", list(PIPELINES))
def test_levels_preserve_semantics(level: str) -> None:
    g = block()
    r = run_passes(g, level, check_translation=True, executor=run)
    assert r.graph.output_names() == ["y"]
    assert_same_outputs(g, r.graph, rtol=1e-4, atol=1e-5)
    assert r.changed is (level != "O0")
    assert [p.name for p in r.report.passes] == list(PIPELINES[level])


def test_o3_report() -> None:
    r = run_passes(block(), "O3")
    counts = r.graph.op_counts()
    assert {op: counts.get(op, 0) for op in ("layer_norm", "attention", "linear", "gelu",
                                             "softmax", "erf")} == {
        "layer_norm": 1, "attention": 1, "linear": 2, "gelu": 0, "softmax": 0, "erf": 0}
    assert [n.attrs["activation"] for n in r.graph.nodes if n.op is ops.linear] == ["none",
                                                                                    "gelu"]
    assert "memory_plan" in r.graph.metadata
    by_name = {p.name: p for p in r.report.passes}
    assert by_name["fuse_attention"].stats == {"attention_mul_scale_mask": 1}
    assert by_name["fuse_attention"].op_changes()["attention"] == (0, 1)
    assert by_name["simplify"].stats["mul_one"] == 1
    assert r.stats["fuse_linear.matmul_add_to_linear"] == 2
    assert by_name["fold_batch_norm"].changed is False
    assert r.report.passes[0].nodes_before == len(block().nodes)
    assert r.report.passes[-1].nodes_after == len(r.graph.nodes)
    text = str(r.report)
    assert text.startswith(f"pipeline on block: {len(block().nodes)} -> {len(r.graph.nodes)}")
    assert "attention_mul_scale_mask=1" in text and "attention 0->1" in text
    d = r.report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["passes"][0]["name"] == "fold_constants"
    assert all(p["seconds"] >= 0 for p in d["passes"])


def test_pass_lists_mix_names_and_callables() -> None:
    def double_neg(graph: Graph) -> PassResult:
        return PassResult(graph, False, {})

    steps = resolve_passes(["simplify", double_neg])
    assert [name for name, _ in steps] == ["simplify", "double_neg"]
    assert resolve_passes("fuse_gelu") == [("fuse_gelu", PASSES["fuse_gelu"])]
    g = block()
    r = run_passes(g, "O0")
    assert r.graph is g and r.changed is False and r.report.passes == ()


def _broken(graph: Graph) -> PassResult:
    """Turns every exp into a neg: a wrong rewrite the translation check must catch."""
    nodes = [dataclasses.replace(n, op=ops.neg) if n.op is ops.exp else n for n in graph.nodes]
    return PassResult(graph.replace(nodes=nodes), True, {"exp_to_neg": 1})


def _exp_graph() -> Graph:
    b = GraphBuilder("e")
    x = b.input("x", "f32", ("N",))
    with b:
        y = ops.exp(x)
    return b.build({"y": y})


def test_translation_check_names_the_broken_pass() -> None:
    with pytest.raises(TranslationError, match="pass _broken changed output 'y'"):
        run_passes(_exp_graph(), ["simplify", _broken], check_translation=True, executor=run)
    with pytest.raises(TranslationError, match="_broken"):  # the executor as the flag
        run_passes(_exp_graph(), [_broken], check_translation=run,
                   inputs={"x": np.ones(2, np.float32)})
    # without the check the broken pass goes through
    assert run_passes(_exp_graph(), [_broken]).changed


def test_verifier_failure_names_the_pass() -> None:
    def drop_first(graph: Graph) -> PassResult:
        return PassResult(graph.replace(nodes=graph.nodes[1:]), True, {})

    with pytest.raises(PassError, match="pass drop_first produced an invalid graph"):
        run_passes(_exp_graph(), [drop_first])


@pytest.mark.parametrize("spec", ["O4", ["simplify", "fuse_everything"]])
def test_unknown_level_or_pass(spec: object) -> None:
    with pytest.raises(PassError) as info:
        run_passes(_exp_graph(), spec)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "levels: O0, O1, O2, O3" in msg and "fuse_linear" in msg and "simplify" in msg


def test_translation_check_needs_an_executor() -> None:
    with pytest.raises(PassError, match="executor"):
        run_passes(_exp_graph(), "O1", check_translation=True)


def test_random_inputs_bind_symbolic_dims_consistently() -> None:
    g = block()
    feeds = random_inputs(g, dims={"B": 2})
    assert feeds["x"].shape == (2, 4, 8) and feeds["x"].dtype == np.float32


def test_optimised_graph_runs_on_onnx_runtime_and_differentiates() -> None:
    """The fused ops reach other backends and autodiff through their decompositions."""
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx import run_onnxruntime
    from lbdl_graph.passes.autodiff import grad

    g = block()
    o = run_passes(g, "O3").graph
    feeds = random_inputs(g)
    want = run(g, feeds)["y"]
    got = run_onnxruntime(o, feeds)
    np.testing.assert_allclose(np.asarray(got["y"]), want, rtol=1e-4, atol=1e-5)

    def grads(graph: Graph) -> dict[str, np.ndarray]:
        b = GraphBuilder.from_graph(graph)
        with b:
            loss = ops.reduce_sum(graph.outputs[0], axes=None, keepdims=False)
        return run(grad(b.build({"loss": loss}), "loss"), feeds)

    before, after = grads(g), grads(o)
    assert list(before) == list(after)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-4, atol=1e-5)
