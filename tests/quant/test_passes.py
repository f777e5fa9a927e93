"""The quantisation passes on small random models: accuracy, NumPy vs ONNX Runtime, sizes,
errors, and the integer kernels ORT makes of the QDQ graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.errors import InputError, OpError, ShapeError
from lbdl_graph.graph import Graph
from lbdl_graph.passes.quant import (
    dequantize_blocks,
    quantize_blocks,
    quantize_dynamic,
    quantize_static,
    quantize_weights,
)

F32 = np.float32


def evaluate(g: Graph, feeds: Any) -> Any:
    """The calibration runner: the NumPy interpreter."""
    return Interpreter(g).run(feeds)


def mlp(k: int = 256, hidden: int = 128, out: int = 10, seed: int = 0) -> Graph:
    """x -> linear(relu) with a (K, N) weight -> x @ W2.T with a torch-layout (N, K) weight."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("mlp")
    x = b.input("x", "f32", ["B", k])
    with b:
        w1 = b.param("fc1.weight", (rng.standard_normal((k, hidden)) / np.sqrt(k)).astype(F32))
        b1 = b.param("fc1.bias", (rng.standard_normal(hidden) * 0.1).astype(F32))
        w2 = b.param("fc2.weight", (rng.standard_normal((out, hidden)) / np.sqrt(hidden))
                     .astype(F32))
        h = ops.linear(x, w1, b1, activation="relu", name="fc1")
        y = ops.matmul(h, ops.transpose(w2, perm=(1, 0)), name="fc2")
    return b.build({"y": y})


def cnn(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    b = GraphBuilder("cnn")
    x = b.input("x", "f32", ["B", 1, 10, 10])
    with b:
        w = b.param("conv.weight", (rng.standard_normal((4, 1, 3, 3)) * 0.4).astype(F32))
        c = ops.relu(ops.conv(x, w, b.param("conv.bias", np.zeros(4, F32)), name="conv"))
        f = ops.reshape(c, shape=(-1, 256))
        fc = b.param("fc.weight", (rng.standard_normal((256, 10)) * 0.06).astype(F32))
        y = ops.matmul(f, fc, name="fc")
    return b.build({"y": y})


def _x(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# (scheme, max relative output error vs float32, max weight bytes ratio)
SCHEMES = [("q4_1", 0.15, 0.16), ("q4_0", 0.2, 0.15), ("q8_0", 0.02, 0.27),
           ("int8", 0.02, 0.26)]


@pytest.mark.parametrize(("scheme", "tol", "ratio"), SCHEMES, ids=[s[0] for s in SCHEMES])
def test_quantize_weights_accuracy_size_and_backends(scheme: str, tol: float,
                                                     ratio: float) -> None:
    g = mlp()
    x = _x((8, 256))
    ref = evaluate(g, {"x": x})["y"]
    res = quantize_weights(g, scheme)
    assert res.changed and res.stats["weights"] == 2 and res.stats["nodes"] == 2
    q = res.graph
    assert "fc1.weight" not in q.param_map and "fc2.weight" not in q.param_map
    assert ("matmul_nbits" in q.op_counts()) == (scheme != "int8")
    assert res.stats["bytes_after"] / res.stats["bytes_before"] <= ratio
    weight_bytes = sum(p.data.nbytes for p in q.params if p.name.startswith(("fc1.w", "fc2.w")))
    assert weight_bytes == res.stats["bytes_after"]
    assert q.metadata["quantization"]["weights"]["fc1.weight"]["bytes_before"] == 256 * 128 * 4
    got = evaluate(q, {"x": x})["y"]
    assert _rel(got, ref) <= tol
    for target in ("ort", "portable"):  # "basic": no ORT fusion that re-quantises activations
        o = OrtRunner(q, providers="cpu", target=target, optimization="basic").run({"x": x})["y"]
        np.testing.assert_allclose(o, got, rtol=1e-5, atol=1e-5)
    kinds = {n.op_type for n in to_onnx(q, target="ort").graph.node}
    assert ("MatMulNBits" in kinds) == (scheme != "int8")


def test_q4_1_graph_computes_with_the_book_format_weights() -> None:
    g = mlp()
    w2 = g.param_map["fc2.weight"].data  # (N, K)
    x = _x((5, 256))
    h = evaluate(g.replace(outputs=[g.node_map["fc1"].outputs[0]]), {"x": x})
    h = next(iter(h.values()))
    q = quantize_weights(g, "q4_1", nodes=["fc2"]).graph
    assert [n.op.name for n in q.nodes].count("matmul_nbits") == 1
    w2q = dequantize_blocks(quantize_blocks(w2, "q4_1"), "q4_1", w2.shape)
    np.testing.assert_allclose(evaluate(q, {"x": x})["y"], h @ w2q.T, rtol=1e-5, atol=1e-5)


def test_q4_1_split_and_float_zero_point_forms_agree() -> None:
    g = mlp(k=200)  # K = 200: the last block of every row is padded
    x = _x((4, 200))
    split = quantize_weights(g, "q4_1").graph
    flt = quantize_weights(g, "q4_1", q4_1_form="float").graph
    assert sum(p.data.nbytes for p in split.params) == sum(p.data.nbytes for p in flt.params)
    assert all(n.inputs[3] is None for n in split.nodes if n.op is ops.matmul_nbits)
    assert all(n.inputs[3] is not None for n in flt.nodes if n.op is ops.matmul_nbits)
    a, b = evaluate(split, {"x": x})["y"], evaluate(flt, {"x": x})["y"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for q in (split, flt):
        o = OrtRunner(q, providers="cpu").run({"x": x})["y"]
        np.testing.assert_allclose(o, a, rtol=1e-4, atol=1e-4)
        nbits = [n for n in to_onnx(q).graph.node if n.op_type == "MatMulNBits"]
        assert len(nbits) == 2 and {n.domain for n in nbits} == {"com.microsoft"}
        assert {len(n.input) for n in nbits} == ({3} if q is split else {4})


def test_padding_shared_weights_and_other_uses() -> None:
    rng = np.random.default_rng(3)
    b = GraphBuilder("odd")
    x = b.input("x", "f32", ["B", 40])
    ids = b.input("ids", "i64", ["B"])
    with b:
        w = b.param("w", rng.standard_normal((40, 6)).astype(F32))
        emb = b.param("emb", rng.standard_normal((40, 40)).astype(F32))
        y1 = ops.matmul(x, w, name="a")
        y2 = ops.matmul(ops.add(x, x), w, name="b")  # the same weight twice
        e = ops.gather(emb, ids, axis=0)  # also read as an embedding: stays float
        y3 = ops.matmul(e, emb, name="tied")
    g = b.build({"y1": y1, "y2": y2, "y3": y3})
    with pytest.raises(ShapeError, match="K=40 inputs, not a multiple of the block size 32") as ei:
        quantize_weights(g, "q4_0", pad=False)
    assert ei.value.node == "a"
    res = quantize_weights(g, "q4_0")
    assert res.stats == {**res.stats, "weights": 1, "nodes": 2, "skipped": 1}
    assert "emb" in res.graph.param_map and "w" not in res.graph.param_map
    feeds = {"x": _x((3, 40)), "ids": np.array([1, 5, 39])}
    ref, got = evaluate(g, feeds), evaluate(res.graph, feeds)
    np.testing.assert_array_equal(got["y3"], ref["y3"])
    assert _rel(got["y1"], ref["y1"]) < 0.2
    ort_out = OrtRunner(res.graph, providers="cpu").run(feeds)
    np.testing.assert_allclose(ort_out["y2"], got["y2"], rtol=1e-5, atol=1e-5)


def test_schemes_that_do_not_apply_name_the_node() -> None:
    g = cnn()
    with pytest.raises(OpError, match="scheme 'q4_1' does not apply to conv") as ei:
        quantize_weights(g, "q4_1", kinds=("matmul", "conv"))
    assert ei.value.node == "conv"
    with pytest.raises(OpError, match="does not apply to conv") as ei:
        quantize_weights(g, "q8_0", nodes=["conv"])
    assert ei.value.node == "conv"
    with pytest.raises(OpError, match="unknown weight quantisation scheme"):
        quantize_weights(g, "q3_k")
    res = quantize_weights(g, "int8", kinds=("conv", "matmul"))
    assert res.stats["weights"] == 2
    x = _x((2, 1, 10, 10))
    assert _rel(evaluate(res.graph, {"x": x})["y"], evaluate(g, {"x": x})["y"]) < 0.02


@pytest.mark.parametrize(("method", "tol"), [("minmax", 0.05), ("percentile", 0.05),
                                             ("entropy", 0.25)])
def test_quantize_static_mlp(method: str, tol: float) -> None:
    g = mlp()
    calib = [{"x": _x((16, 256), seed=s)} for s in range(4)]
    res = quantize_static(g, calib, method, evaluate=evaluate, bins=256)
    # fc1's bias add reads its matmul: that output is quantised too (ORT's QLinearMatMul)
    assert res.stats == {"nodes": 2, "weights": 2, "activations": 3}
    q = res.graph
    assert q.op_counts()["quantize_linear"] == 3 and q.op_counts()["dequantize_linear"] == 5
    x = _x((8, 256), seed=9)
    got = evaluate(q, {"x": x})["y"]
    assert _rel(got, evaluate(g, {"x": x})["y"]) <= tol
    o = OrtRunner(q, providers="cpu").run({"x": x})["y"]
    # the hidden activation is re-quantised: where ORT's and NumPy's float sums differ in the
    # last bit, a value on a rounding boundary can land one code apart
    close = np.isclose(o, got, rtol=1e-5, atol=1e-5 * np.abs(got).max())
    assert close.mean() > 0.8
    np.testing.assert_allclose(o, got, atol=0.01 * np.abs(got).max())
    acts = q.metadata["quantization"]["static"]["activations"]
    lo, hi, scale, zp = acts["x"]
    assert lo < 0 < hi and 0 < zp < 255 and scale == pytest.approx((hi - lo) / 255, rel=1e-6)


def test_quantize_static_gives_ort_integer_kernels(tmp_path: Path) -> None:
    g = cnn()
    res = quantize_static(g, {"x": _x((8, 1, 10, 10))}, evaluate=evaluate)
    path = tmp_path / "optimized.onnx"
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(path)
    ort.InferenceSession(to_onnx(res.graph).SerializeToString(), so,
                         providers=["CPUExecutionProvider"])
    kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QLinearConv", "MatMulIntegerToFloat"} <= kinds and "Conv" not in kinds
    x = _x((3, 1, 10, 10), seed=4)
    got = evaluate(res.graph, {"x": x})["y"]
    assert _rel(got, evaluate(g, {"x": x})["y"]) < 0.05
    o = OrtRunner(res.graph, providers="cpu").run({"x": x})["y"]
    # QLinearConv requantises in fixed point: an output code may differ by one step
    np.testing.assert_allclose(o, got, atol=0.02 * np.abs(got).max())


def test_calibration_data_errors_name_the_input() -> None:
    g = mlp()
    with pytest.raises(InputError, match=r"batch 1: input 'x' expects f32\[B,256\], got "
                                         r"float32\[4,28,28\]"):
        quantize_static(g, [{"x": _x((4, 256))}, {"x": _x((4, 28, 28))}], evaluate=evaluate)
    with pytest.raises(InputError, match=r"got float64\[4,256\]"):
        quantize_static(g, {"x": np.zeros((4, 256))}, evaluate=evaluate)
    with pytest.raises(InputError, match="missing input 'x'"):
        quantize_static(g, {"y": _x((4, 256))}, evaluate=evaluate)
    with pytest.raises(OpError, match="unknown calibration method"):
        quantize_static(g, {"x": _x((4, 256))}, "kl", evaluate=evaluate)


def test_quantize_dynamic() -> None:
    g = mlp()
    res = quantize_dynamic(g)
    assert res.stats == {"nodes": 2, "weights": 2}
    assert res.graph.op_counts()["dynamic_quant_matmul"] == 2
    x = _x((6, 256), seed=5)
    got = evaluate(res.graph, {"x": x})["y"]
    assert _rel(got, evaluate(g, {"x": x})["y"]) < 0.03
    for target in ("ort", "portable"):
        o = OrtRunner(res.graph, providers="cpu", target=target).run({"x": x})["y"]
        np.testing.assert_allclose(o, got, rtol=1e-5, atol=1e-4)


def test_blocked_dequantize_linear_numpy_vs_ort() -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((64, 12)).astype(F32)
    s = (np.abs(w.reshape(2, 32, 12)).max(1) / 7).astype(F32)
    q = np.clip(np.rint(w / np.repeat(s, 32, axis=0)), -8, 7).astype(np.int8)
    b = GraphBuilder("dq4")
    x = b.input("x", "f32", ["B", 64])
    with b:
        wq = b.param("wq", q.astype("int4"))
        wd = ops.dequantize_linear(wq, b.param("s", s), axis=0, block_size=32)
        y = ops.matmul(x, wd)
    g = b.build({"y": y})
    xs = _x((4, 64), seed=7)
    got = evaluate(g, {"x": xs})["y"]
    np.testing.assert_allclose(got, xs @ (q * np.repeat(s, 32, axis=0)), rtol=1e-5, atol=1e-5)
    exact = OrtRunner(g, providers="cpu", optimization="basic").run({"x": xs})["y"]
    np.testing.assert_allclose(exact, got, rtol=1e-5, atol=1e-5)
    # at level "all" ORT fuses DQ + MatMul into MatMulNBits with int8 activations
    fused = OrtRunner(g, providers="cpu").run({"x": xs})["y"]
    np.testing.assert_allclose(fused, got, atol=0.02 * np.abs(got).max())


def test_traced_zoo_model() -> None:
    from lbdl_graph.frontends import zoo

    entry = zoo.get("lenet_digits")
    g = entry.trace()
    feeds = entry.example_inputs()
    name = g.output_names()[0]
    ref = evaluate(g, feeds)[name]
    for scheme in ("q4_1", "int8"):
        q = quantize_weights(g, scheme).graph
        got = evaluate(q, feeds)[name]
        assert _rel(got, ref) < 0.2
        o = OrtRunner(q, providers="cpu", optimization="basic").run(feeds)[name]
        np.testing.assert_allclose(o, got, rtol=1e-4, atol=1e-5)
    st = quantize_static(g, [entry.example_inputs(seed=s) for s in range(2)], evaluate=evaluate)
    assert st.stats["nodes"] == 4
    assert _rel(evaluate(st.graph, feeds)[name], ref) < 0.05
