"""The tanh-GELU VJP, rearranged into fewer passes, equals the textbook derivative within 1e-5
on the NumPy and ONNX Runtime backends (float32, and float64 to rounding)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad

C, A = math.sqrt(2.0 / math.pi), 0.044715


def textbook(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """d/dx of x/2 (1 + tanh(c (x + a x^3))), times g, in float64."""
    x64 = x.astype(np.float64)
    t = np.tanh(C * (x64 + A * x64**3))
    slope = 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * C * (1 + 3 * A * x64**2)
    return g.astype(np.float64) * slope


def gelu_grad_graph(dt: str, n: int) -> Graph:
    b = GraphBuilder("gelu_grad")
    x = b.input("x", dt, (n,))
    cot = b.input("cot", dt, (n,))
    with b:
        y = ops.gelu(x, approximate="tanh")
        loss = ops.reduce_sum(ops.mul(y, cot), axes=None, keepdims=False)
    return grad(b.build({"loss": loss}), "loss", ["x"])


def _feeds(dt: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # the GELU's whole working range: tails where tanh saturates, and around 0
    x = np.concatenate([np.linspace(-12, 12, 2001), rng.standard_normal(4000) * 3,
                        [0.0, -0.0, 1e-8, -1e-8, 40.0, -40.0]])
    return {"x": x.astype(dt), "cot": rng.standard_normal(x.size).astype(dt)}


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_gelu_tanh_grad_matches_textbook(backend: str, dt: str) -> None:
    feeds = _feeds(dt)
    g = gelu_grad_graph(dt, feeds["x"].size)
    run = Interpreter(g).run if backend == "numpy" else OrtRunner(g).run
    got = run(feeds)["grad:x"]
    assert got.dtype == np.dtype(dt)
    want = textbook(feeds["x"], feeds["cot"])
    tol = 1e-5 if dt == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_gelu_tanh_grad_backends_agree() -> None:
    feeds = _feeds("float32")
    g = gelu_grad_graph("float32", feeds["x"].size)
    a = Interpreter(g).run(feeds)["grad:x"]
    b = OrtRunner(g).run(feeds)["grad:x"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_gelu_tanh_grad_fewer_nodes() -> None:
    """14 full-size elementwise passes in the VJP (18 in the textbook arrangement), plus the
    forward's and the backward's multiplications by ``cot``."""
    g = gelu_grad_graph("float32", 8)
    passes = [n.op.name for n in g.nodes if n.op.name in ("mul", "add", "sub", "tanh")]
    assert len(passes) == 14 + 2, passes
