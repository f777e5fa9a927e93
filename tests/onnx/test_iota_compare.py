"""Lowering rule: a comparison of two iotas of one tensor (causal masks, identities) compares
their columns and expands the bool result; dead ONNX nodes are dropped from the export.
Results stay equal to the NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.export import export_graph
from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.frontends import InputSpec, Tensor, trace
from lbdl_graph.frontends import functional as F
from lbdl_graph.graph import Graph


def _compare_graph(op: object, ax: int, ay: int) -> Graph:
    b = GraphBuilder("iota_compare")
    x = b.input("x", "float32", ("N", "T", "S"))
    with b:
        m = op(ops.iota_like(x, axis=ax), ops.iota_like(x, axis=ay))  # type: ignore[operator]
    return b.build({"m": m})


@pytest.mark.parametrize("op", [ops.less_equal, ops.less, ops.greater, ops.greater_equal,
                                ops.equal])
@pytest.mark.parametrize("axes", [(1, 2), (2, 1), (0, 2)])
def test_iota_compare_equals_numpy(op: object, axes: tuple[int, int]) -> None:
    g = _compare_graph(op, *axes)
    x = np.zeros((2, 5, 7), np.float32)
    want = Interpreter(g).run({"x": x})["m"]
    got = OrtRunner(g).run({"x": x})["m"]
    assert got.dtype == np.bool_ and got.shape == (2, 5, 7)
    np.testing.assert_array_equal(got, want)
    model = export_graph(g).model
    ops_used = [n.op_type for n in model.graph.node]
    # the two full-size iotas are gone: one Expand, of the bool result
    assert ops_used.count("Expand") == 1, ops_used
    expand = next(n for n in model.graph.node if n.op_type == "Expand")
    compare = next(n for n in model.graph.node if n.output[0] == expand.input[0])
    assert compare.op_type in ("LessOrEqual", "Less", "Greater", "GreaterOrEqual", "Equal")


def test_same_axis_and_other_operands_keep_plain_compare() -> None:
    g = _compare_graph(ops.less_equal, 1, 1)
    x = np.zeros((2, 3, 4), np.float32)
    np.testing.assert_array_equal(OrtRunner(g).run({"x": x})["m"], np.ones((2, 3, 4), bool))
    b = GraphBuilder("iota_vs_input")
    x_in = b.input("x", "float32", ("N", 4))
    k = b.input("k", "int64", ("N", 4))
    with b:
        m = ops.less(ops.iota_like(x_in, axis=1), k)
    g2 = b.build({"m": m})
    feeds = {"x": np.zeros((3, 4), np.float32),
             "k": np.random.default_rng(0).integers(0, 5, (3, 4))}
    np.testing.assert_array_equal(OrtRunner(g2).run(feeds)["m"], Interpreter(g2).run(feeds)["m"])


def test_causal_attention_equal_on_both_backends() -> None:
    def attn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    spec = InputSpec(("N", 2, "T", 8))
    g = trace(attn, {"q": spec, "k": spec, "v": spec})
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((3, 2, 6, 8)).astype(np.float32) for n in "qkv"}
    want = Interpreter(g).run(feeds)["output"]
    got = OrtRunner(g).run(feeds)["output"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert "Expand" in [n.op_type for n in export_graph(g).model.graph.node]


def test_dead_nodes_dropped_outputs_kept() -> None:
    b = GraphBuilder("dead")
    x = b.input("x", "float32", (3,))
    with b:
        ops.exp(x)  # read by nothing
        y = ops.neg(x)
    g = b.build({"y": y, "x_again": x})
    assert "exp" in [n.op.name for n in g.nodes]  # the IR keeps it; the export does not
    model = export_graph(g).model
    assert "Exp" not in [n.op_type for n in model.graph.node]
    out = OrtRunner(g).run({"x": np.ones(3, np.float32)})
    np.testing.assert_array_equal(out["y"], -np.ones(3, np.float32))
