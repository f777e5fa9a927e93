"""The ReLU VJP, g * float(y > 0), equals where(x > 0, g, 0) on the NumPy and ONNX Runtime
backends (exactly, zeros and negative zeros included) and its backward has no ``where``."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad


def relu_grad_graph(dt: str, shape: tuple[int, ...]) -> Graph:
    b = GraphBuilder("relu_grad")
    x = b.input("x", dt, shape)
    cot = b.input("cot", dt, shape)
    with b:
        loss = ops.reduce_sum(ops.mul(ops.relu(x), cot), axes=None, keepdims=False)
    return grad(b.build({"loss": loss}), "loss", ["x"])


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_relu_grad_is_the_step_function(backend: str, dt: str) -> None:
    shape = (4, 3, 5, 5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dt)
    x.flat[:4] = [0.0, -0.0, 1e-30, -1e-30]  # the kink: no gradient at 0, as in torch
    cot = rng.standard_normal(shape).astype(dt)
    g = relu_grad_graph(dt, shape)
    assert "where" not in {n.op.name for n in g.nodes}
    run = Interpreter(g).run if backend == "numpy" else OrtRunner(g, providers="cpu").run
    got = run({"x": x, "cot": cot})["grad:x"]
    assert got.dtype == np.dtype(dt)
    np.testing.assert_array_equal(got, np.where(x > 0, cot, 0).astype(dt))
