"""The conv weight gradient in its im2col + MatMul form (``passes/autodiff/conv_im2col.py``):
equal to torch's on both backends (strides, pads, dilations, 1-D/2-D/3-D, 1x1 kernels, a
symbolic batch), to the swapped-axes conv form it replaces, and used only where it fits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import conv_im2col, grad

# (x shape, w shape, strides, pads, dilations)
CASES: list[tuple[tuple[int, ...], tuple[int, ...], Any, Any, Any]] = [
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 3, 9, 8), (5, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((3, 4, 8, 8), (6, 4, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    ((2, 2, 10, 7), (3, 2, 3, 2), (1, 2), (2, 0, 1, 1), (2, 1)),
    ((2, 3, 11), (4, 3, 5), (3,), (2, 1), (1,)),
    ((1, 2, 5, 6, 4), (3, 2, 2, 3, 1), (1, 2, 1), (0, 1, 1, 1, 0, 0), (1, 1, 1)),
]


def conv_grad_graph(xs: tuple[Any, ...], ws: tuple[int, ...], **attrs: Any) -> Graph:
    """loss = sum(conv(x, w) * cot); gradients of x and w."""
    b = GraphBuilder("conv_grad")
    x = b.input("x", "float32", xs)
    w = b.input("w", "float32", ws)
    with b:
        y = ops.conv(x, w, None, **attrs)
        cot = b.input("cot", "float32", y.shape)
        loss = ops.reduce_sum(ops.mul(y, cot), axes=None, keepdims=False)
    return grad(b.build({"loss": loss}), "loss", ["x", "w"])


def feeds(xs: tuple[int, ...], ws: tuple[int, ...], g: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    cot_shape = (xs[0], *g.input("cot").shape[1:])
    return {"x": rng.standard_normal(xs).astype(np.float32),
            "w": rng.standard_normal(ws).astype(np.float32),
            "cot": rng.standard_normal(cot_shape).astype(np.float32)}


def torch_grads(f: dict[str, np.ndarray], **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    k = f["w"].ndim - 2
    x = torch.tensor(f["x"], dtype=torch.float64, requires_grad=True)
    w = torch.tensor(f["w"], dtype=torch.float64, requires_grad=True)
    p = attrs["pads"]
    xp = torch.nn.functional.pad(x, [v for i in reversed(range(k)) for v in (p[i], p[i + k])])
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d,
            torch.nn.functional.conv3d)[k - 1]
    y = conv(xp, w, stride=attrs["strides"], dilation=attrs["dilations"])
    (y * torch.tensor(f["cot"], dtype=torch.float64)).sum().backward()
    assert x.grad is not None and w.grad is not None
    return x.grad.numpy(), w.grad.numpy()


def _run(g: Graph, f: dict[str, np.ndarray], backend: str) -> dict[str, Any]:
    return dict(Interpreter(g).run(f) if backend == "numpy" else OrtRunner(g).run(f))


@pytest.mark.parametrize("patches", ["conv", "slice"])
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize(("xs", "ws", "s", "p", "d"), CASES)
def test_weight_grad_matches_torch(monkeypatch: pytest.MonkeyPatch, patches: str, backend: str,
                                   xs: tuple[int, ...], ws: tuple[int, ...], s: Any, p: Any,
                                   d: Any) -> None:
    monkeypatch.setattr(conv_im2col, "PATCHES", patches)
    attrs = {"strides": s, "pads": p, "dilations": d}
    g = conv_grad_graph(xs, ws, **attrs)
    assert "matmul" in {n.op.name for n in g.nodes}  # the im2col form was taken
    f = feeds(xs, ws, g)
    got = _run(g, f, backend)
    gx, gw = torch_grads(f, **attrs)
    np.testing.assert_allclose(got["grad:w"], gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["grad:x"], gx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize(("xs", "ws", "s", "p", "d"), CASES[:4])
def test_im2col_equals_the_swapped_axes_conv(monkeypatch: pytest.MonkeyPatch, backend: str,
                                             xs: tuple[int, ...], ws: tuple[int, ...],
                                             s: Any, p: Any, d: Any) -> None:
    attrs = {"strides": s, "pads": p, "dilations": d}
    new = conv_grad_graph(xs, ws, **attrs)
    f = feeds(xs, ws, new)
    monkeypatch.setattr(conv_im2col, "MAX_PATCH_ELEMENTS", 0)
    old = conv_grad_graph(xs, ws, **attrs)
    assert "matmul" not in {n.op.name for n in old.nodes}
    a, b = _run(new, f, backend), _run(old, f, backend)
    np.testing.assert_allclose(a["grad:w"], b["grad:w"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a["grad:x"], b["grad:x"])


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_symbolic_batch(backend: str) -> None:
    xs, ws = (3, 2, 6, 6), (4, 2, 3, 3)
    attrs = {"strides": (2, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)}
    g = conv_grad_graph(("N", 2, 6, 6), ws, **attrs)
    f = feeds(xs, ws, g)
    _, gw = torch_grads(f, **attrs)
    np.testing.assert_allclose(_run(g, f, backend)["grad:w"], gw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_conv_transpose_weight_grad_with_output_padding(backend: str) -> None:
    """conv_transpose's weight gradient runs the same form with x and g swapped; its output
    padding leaves windows past the input's length that the patches must drop."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = GraphBuilder("convt_grad")
    xv, wv = b.input("x", "float32", x.shape), b.input("w", "float32", w.shape)
    with b:
        y = ops.conv_transpose(xv, wv, None, strides=(2, 2), pads=(1, 1, 1, 1),
                               output_padding=(1, 1))
        cot = b.input("cot", "float32", y.shape)
        loss = ops.reduce_sum(ops.mul(y, cot), axes=None, keepdims=False)
    g = grad(b.build({"loss": loss}), "loss", ["x", "w"])
    c = rng.standard_normal(tuple(int(v) for v in cot.shape)).astype(np.float32)
    got = _run(g, {"x": x, "w": w, "cot": c}, backend)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, stride=2, padding=1, output_padding=1)
    (ty * torch.tensor(c, dtype=torch.float64)).sum().backward()
    assert tw.grad is not None
    np.testing.assert_allclose(got["grad:w"], tw.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_grouped_large_kernels_and_oversized_keep_the_conv_form(
        monkeypatch: pytest.MonkeyPatch) -> None:
    grouped = conv_grad_graph((2, 4, 6, 6), (4, 2, 3, 3), pads=(1, 1, 1, 1), group=2)
    assert "matmul" not in {n.op.name for n in grouped.nodes}
    five = conv_grad_graph((2, 3, 8, 8), (4, 3, 5, 5), pads=(2, 2, 2, 2))
    assert "matmul" not in {n.op.name for n in five.nodes}  # 25 taps: the conv form is faster
    monkeypatch.setattr(conv_im2col, "MAX_PATCH_ELEMENTS", 3 * 9 * 64 - 1)
    big = conv_grad_graph((2, 3, 8, 8), (4, 3, 3, 3), pads=(1, 1, 1, 1))
    assert "matmul" not in {n.op.name for n in big.nodes}
