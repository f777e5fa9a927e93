"""Merging as graph nodes: equal to the NumPy reference, exported to ORT, differentiable."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import print_graph
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.errors import DTypeError, ShapeError
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.merge import task_arithmetic, ties_merge
from lbdl_graph.passes.merge_graph import build_merge_graph


def _models(seed: int = 0, n: int = 3) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    base = {"w": rng.standard_normal((4, 5)).astype(np.float32),
            "b": rng.standard_normal(5).astype(np.float32),
            "steps": np.asarray([3, 1], np.int64)}
    fts = [{"w": (base["w"] + rng.standard_normal((4, 5)) * 0.1).astype(np.float32),
            "b": (base["b"] + rng.standard_normal(5) * 0.1).astype(np.float32),
            "steps": base["steps"].copy()} for _ in range(n)]
    return base, fts


def _run(g: object) -> dict[str, np.ndarray]:
    return Interpreter(g).run({})  # type: ignore[arg-type]


@pytest.mark.parametrize("weights", [1.0, [0.5, -0.3, 1.2]])
def test_task_arithmetic_graph_equals_numpy(weights: float | list[float]) -> None:
    base, fts = _models()
    got = _run(build_merge_graph(base, fts, weights=weights))
    want = task_arithmetic(base, fts, weights)
    for n in base:
        assert got[n].dtype == want[n].dtype
        np.testing.assert_allclose(got[n], want[n], atol=1e-6, rtol=0)


@pytest.mark.parametrize(("density", "per_tensor"), [(0.2, False), (0.5, True), (1.0, False)])
def test_ties_graph_equals_numpy(density: float, per_tensor: bool) -> None:
    base, fts = _models(1)
    got = _run(build_merge_graph(base, fts, "ties", density=density, lam=0.8,
                                 per_tensor=per_tensor))
    want = ties_merge(base, fts, density, 0.8, per_tensor=per_tensor)
    for n in base:
        np.testing.assert_allclose(got[n], want[n], atol=1e-6, rtol=0)
    assert not np.array_equal(got["w"], base["w"])


def test_merge_graph_prints_and_runs_on_ort_equal_to_numpy() -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx import run_onnxruntime

    base, fts = _models(2)
    g = build_merge_graph(base, fts, "ties", density=0.3)
    text = print_graph(g)
    assert "kth_largest" in text and "sign" in text
    got = run_onnxruntime(g, {})
    want = ties_merge(base, fts, 0.3, 1.0)
    for n in base:
        np.testing.assert_allclose(got[n], want[n], atol=1e-6, rtol=0)


def test_gradient_wrt_coefficients_is_the_task_vector_dot() -> None:
    base, fts = _models(3, n=2)
    g = build_merge_graph({"w": base["w"]}, [{"w": f["w"]} for f in fts], weights=[0.2, 0.7],
                          learn_coefficients=True)
    from lbdl_graph import GraphBuilder, ops

    b = GraphBuilder.from_graph(g)
    with b:
        out = g.outputs[0]
        sq = ops.mul(ops.cast(out, to="float64"), ops.cast(out, to="float64"))
        loss = ops.reduce_sum(sq, axes=None, keepdims=False)
    lg = grad(b.build({"w": out, "loss": loss}))
    res = Interpreter(lg).run({})
    merged = res["w"].astype(np.float64)
    for t in range(2):
        tau = fts[t]["w"].astype(np.float64) - base["w"]
        np.testing.assert_allclose(res[f"grad:merge/lambda_{t}"], 2 * np.sum(merged * tau),
                                   rtol=1e-5)


def test_learn_merge_coefficients_by_gradient_descent() -> None:
    """Two 'tasks' fine-tune a linear map on separate halves of the output; the merge that solves
    both needs λ = (1, 1). Gradient descent through the merge graph finds it from (0.2, 0.2)."""
    from lbdl_graph import GraphBuilder, ops

    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 4)) * 0.1
    target = rng.standard_normal((6, 4))
    ft_a, ft_b = base.copy(), base.copy()
    ft_a[:, :2], ft_b[:, 2:] = target[:, :2], target[:, 2:]
    x = rng.standard_normal((32, 6))
    g = build_merge_graph({"w": base}, [{"w": ft_a}, {"w": ft_b}], weights=[0.2, 0.2],
                          learn_coefficients=True)
    b = GraphBuilder.from_graph(g)
    xin = b.input("x", "float64", (32, 6))
    with b:
        err = ops.sub(ops.matmul(xin, g.outputs[0]),
                      ops.constant(value=x @ target, name="y"))
        loss = ops.reduce_mean(ops.mul(err, err), axes=None, keepdims=False)
    lg = Interpreter(grad(b.build({"loss": loss})))
    lam = np.asarray([0.2, 0.2])
    first = None
    for _ in range(60):
        params = {f"merge/lambda_{t}": np.asarray(lam[t]) for t in range(2)}
        res = lg.run({"x": x}, params=params)
        first = float(res["loss"]) if first is None else first
        lam = lam - 0.1 * np.asarray([res["grad:merge/lambda_0"], res["grad:merge/lambda_1"]])
    np.testing.assert_allclose(lam, [1.0, 1.0], atol=0.02)
    assert first is not None and float(res["loss"]) < 0.01 * first


def test_bad_models_give_typed_errors() -> None:
    base, fts = _models()
    with pytest.raises(ShapeError):
        build_merge_graph(base, [{**fts[0], "b": np.zeros(3, np.float32)}])
    with pytest.raises(DTypeError):
        build_merge_graph(base, [{**fts[0], "steps": np.asarray([9, 9])}])
    with pytest.raises(ShapeError, match="density"):
        build_merge_graph(base, fts, "ties", density=0.0)


def test_kth_largest_is_declared_non_differentiable() -> None:
    from lbdl_graph import GraphBuilder, ops
    from lbdl_graph.errors import AutodiffError

    b = GraphBuilder("k")
    x = b.input("x", "float64", (5,))
    with b:
        loss = ops.kth_largest(x, k=2)
    assert not ops.kth_largest.differentiable
    with pytest.raises(AutodiffError, match="through differentiable ops"):
        grad(b.build({"loss": loss}), wrt="x")
    with pytest.raises(ShapeError, match="exceeds"), GraphBuilder("bad") as bb:
        ops.kth_largest(bb.input("y", "float32", (3,)), k=4)


def test_a_saved_ties_merge_graph_imports_back(tmp_path: object) -> None:
    """The ONNX of a TIES merge (its threshold is a TopK over 100+ entries) re-imports and
    gives the same merged weights."""
    from pathlib import Path

    from lbdl_graph.backends.onnx import save_onnx
    from lbdl_graph.frontends.onnx import import_onnx

    rng = np.random.default_rng(3)
    base = {"w": rng.standard_normal((12, 10)).astype(np.float32)}
    fts = [{"w": (base["w"] + 0.1 * rng.standard_normal((12, 10))).astype(np.float32)}
           for _ in range(2)]
    g = build_merge_graph(base, fts, "ties", density=0.9)  # k = 108
    path = Path(str(tmp_path)) / "ties.onnx"
    save_onnx(g, path)
    back = import_onnx(path)
    got, want = _run(back), _run(g)
    for n in base:
        np.testing.assert_array_equal(got[n], want[n])
