"""The max-pool gradient goes to the first maximum of each window (row-major), ties included,
on both backends: checked against the definition for windows that tile the input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad


def pool_grad_graph(shape: tuple[Any, ...], dt: str = "float32", **attrs: Any) -> Graph:
    b = GraphBuilder("pool_grad")
    x = b.input("x", dt, shape)
    with b:
        y, _ = ops.max_pool(x, **attrs)
        cot = b.input("cot", dt, y.shape)
        loss = ops.reduce_sum(ops.mul(y, cot), axes=None, keepdims=False)
    return grad(b.build({"loss": loss}), "loss", ["x"])


def scatter_reference(x: np.ndarray, cot: np.ndarray, k: tuple[int, ...]) -> np.ndarray:
    """x_bar by the definition: each window's cotangent to its first maximum (row-major)."""
    out = np.zeros_like(x)
    for idx in np.ndindex(*cot.shape):
        n, c, *o = idx
        sl = (n, c, *[slice(i * kk, (i + 1) * kk) for i, kk in zip(o, k, strict=True)])
        win = x[sl]
        first = np.unravel_index(int(np.argmax(win)), win.shape)
        out[sl][first] += cot[idx]
    return out


CASES = [((2, 3, 8, 8), (2, 2)), ((1, 2, 6, 9), (3, 3)), ((2, 1, 8, 4), (4, 4)),
         ((2, 2, 12), (4,)), ((1, 1, 4, 6, 4), (2, 3, 2)), ((1, 2, 4, 6), (2, 3))]


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize(("shape", "k"), CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_grad_equals_definition(backend: str, shape: tuple[int, ...],
                                               k: tuple[int, ...], ties: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    if ties:  # after a ReLU most windows tie at 0; a few tie at 1
        x = np.where(x < 0.3, 0.0, np.where(x > 1.2, 1.0, x)).astype(np.float32)
    g = pool_grad_graph(shape, kernel_shape=k, strides=k)
    y_shape = (*shape[:2], *[n // kk for n, kk in zip(shape[2:], k, strict=True)])
    cot = rng.standard_normal(y_shape).astype(np.float32)
    run = Interpreter(g).run if backend == "numpy" else OrtRunner(g).run
    got = run({"x": x, "cot": cot})["grad:x"]
    np.testing.assert_array_equal(got, scatter_reference(x, cot, k))


@pytest.mark.parametrize(("k", "strides", "unpool"), [((2, 2), (2, 2), True),
                                                      ((3, 3), (3, 4), True),
                                                      ((3, 3), (2, 2), False)])
def test_non_overlapping_windows_unpool(k: tuple[int, ...], strides: tuple[int, ...],
                                        unpool: bool) -> None:
    """Windows that share no element write the cotangent back with one max_unpool; overlapping
    ones keep the scatter-add (an element may be the maximum of two windows)."""
    g = pool_grad_graph((2, 3, 12, 12), kernel_shape=k, strides=strides)
    names = {n.op.name for n in g.nodes}
    assert ("max_unpool" in names) is unpool
    assert ("scatter_elements" in names) is not unpool
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    cot = rng.standard_normal(tuple(g.input("cot").type.shape)).astype(np.float32)
    want = Interpreter(g).run({"x": x, "cot": cot})["grad:x"]
    np.testing.assert_array_equal(OrtRunner(g).run({"x": x, "cot": cot})["grad:x"], want)


@pytest.mark.parametrize(("shape", "k", "strides", "op"), [
    ((2, 3, 12, 12), (3, 3), (3, 3), "MaxUnpool"),  # windows tile the input
    ((2, 3, 12, 12), (3, 3), (3, 4), "ScatterElements"),  # a remainder: not MaxUnpool's shape
])
def test_exported_unpool_means_the_same_everywhere(shape: tuple[int, ...], k: tuple[int, ...],
                                                   strides: tuple[int, ...], op: str) -> None:
    """MaxUnpool is exported only where its output is the shape it infers (runtimes read an
    explicit other output_shape differently); the model agrees with the ONNX reference
    evaluator and imports back."""
    from onnx.reference import ReferenceEvaluator

    from lbdl_graph.backends.onnx.export import to_onnx
    from lbdl_graph.frontends.onnx import import_onnx

    g = pool_grad_graph(shape, kernel_shape=k, strides=strides)
    model = to_onnx(g)
    assert op in {n.op_type for n in model.graph.node}
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    feeds["cot"] = rng.standard_normal(tuple(g.input("cot").type.shape)).astype(np.float32)
    want = Interpreter(g).run(feeds)["grad:x"]
    (got,) = ReferenceEvaluator(model).run(["grad:x"], feeds)
    np.testing.assert_array_equal(got, want)
    back = import_onnx(model)
    np.testing.assert_array_equal(Interpreter(back).run(feeds)["grad:x"], want)
