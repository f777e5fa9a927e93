"""Quantisation-aware training on small graphs: the prepared graph computes the converted one,
straight-through gradients, training steps, the matmul_nbits gradient, errors, and the QDQ
placement that gives ORT integer kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.errors import InputError, OpError
from lbdl_graph.frontends import manual_seed, nn
from lbdl_graph.frontends.trace import InputSpec
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.quant import (
    add_loss,
    block_fields,
    convert_qat,
    prepare_qat,
    qat_weights,
    quantize_blocks,
    quantize_static,
)
from lbdl_graph.passes.train_step import make_train_step

from .test_passes import _x, cnn, evaluate, mlp

F32 = np.float32

# (graph, input shape, scheme, bits, activation type or "" for weight-only)
CASES = [
    (mlp, (8, 256), "per_channel_symmetric", 8, ""),
    (mlp, (8, 256), "per_channel_symmetric", 4, "uint8"),
    (mlp, (8, 256), "per_tensor_symmetric", 4, "uint8"),
    (mlp, (8, 256), "per_channel_symmetric", 4, "uint4"),
    (mlp, (8, 256), "q4_1_blocks", 4, ""),
    (mlp, (8, 256), "q4_0_blocks", 4, ""),
    (cnn, (4, 1, 10, 10), "per_channel_symmetric", 4, ""),
    (cnn, (4, 1, 10, 10), "per_tensor_symmetric", 8, "int8"),
    (cnn, (4, 1, 10, 10), "per_channel_symmetric", 3, "int4"),
]


@pytest.mark.parametrize(("build", "shape", "scheme", "bits", "acts"), CASES,
                         ids=[f"{c[0].__name__}-{c[2]}-{c[3]}-{c[4] or 'w'}" for c in CASES])
def test_converted_graph_computes_the_prepared_graph(build: Any, shape: tuple[int, ...],
                                                     scheme: str, bits: int, acts: str) -> None:
    g = build()
    res = prepare_qat(g, bits=bits, weight_scheme=scheme, activations=bool(acts),
                      activation_type=acts or "uint8", calibration_data={"x": _x(shape, seed=3)},
                      evaluate=evaluate)
    assert res.stats == {"nodes": 2, "weights": 2, "activations": 3 if acts else 0}
    prepared = res.graph
    assert prepare_qat(prepared, bits=bits, weight_scheme=scheme).graph is prepared
    assert all(p.trainable for p in g.params if p.name in prepared.param_map)
    assert not any(p.trainable for p in prepared.params if ".qat_" in p.name)
    conv = convert_qat(prepared).graph
    counts = conv.op_counts()
    assert "qat" not in conv.metadata
    # 4-bit activations stay fake quantisation; 8-bit ones become QDQ pairs
    assert counts.get("fake_quantize", 0) == (3 if acts in ("uint4", "int4") else 0)
    assert counts.get("quantize_linear", 0) == (3 if acts in ("uint8", "int8") else 0)
    # matmul weights run as matmul_nbits unless next to 8-bit activation QDQ pairs
    matmuls = 2 if build is mlp else 1
    assert counts.get("matmul_nbits", 0) == (0 if acts in ("uint8", "int8") else matmuls)
    assert not any(p.data.dtype == F32 and p.data.ndim >= 2 and p.data.shape[-1] > 9
                   for p in conv.params)  # no float matrix left (9: 4-bit scales of a row)
    x = _x(shape)
    ref, sim = evaluate(g, {"x": x})["y"], evaluate(prepared, {"x": x})["y"]
    got = evaluate(conv, {"x": x})["y"]
    # the converted weights are exactly the fake-quantised ones (Q4_1 adds m in another order)
    np.testing.assert_allclose(got, sim, rtol=1e-5, atol=1e-5 * np.abs(sim).max())
    err = np.abs(sim - ref).max() / np.abs(ref).max()
    assert 0 < err < (0.03 if bits == 8 and acts in ("", "uint8", "int8") else 0.5)
    o = OrtRunner(conv, providers="cpu").run({"x": x})["y"]
    np.testing.assert_allclose(o, got, rtol=1e-4, atol=1e-4 * np.abs(got).max())


def test_block_scales_are_llama_cpp_s() -> None:
    w = np.random.default_rng(0).standard_normal((6, 80)).astype(F32)
    for scheme, fmt in (("q4_1_blocks", "q4_1"), ("q4_0_blocks", "q4_0")):
        codes, d, m = qat_weights(w, scheme, 4, None)
        ref = block_fields(quantize_blocks(w, fmt, pad=True), fmt, (6, 80))
        np.testing.assert_array_equal(d, ref.d.astype(F32))
        if m is not None:
            assert ref.m is not None
            np.testing.assert_array_equal(m, ref.m.astype(F32))
        # codes are rounded from the fp16 scale (what the QAT forward sees): at most one step
        diff = np.abs(codes.astype(int) - ref.codes.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05


def _tanh_loss(w: np.ndarray, x: np.ndarray, cot: np.ndarray) -> Graph:
    b = GraphBuilder("tanh_loss")
    xv = b.input("x", "f32", list(x.shape))
    with b:
        h = ops.tanh(ops.matmul(xv, b.param("w", w), name="fc"))
        loss = ops.reduce_sum(ops.mul(h, b.param("cot", cot, trainable=False)), axes=None,
                              keepdims=False)
    return b.build({"loss": loss})


@pytest.mark.parametrize("scheme", ["per_channel_symmetric", "q4_1_blocks"])
def test_weight_gradient_is_straight_through(scheme: str) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 5)).astype(F32)
    x = rng.standard_normal((7, 64)).astype(F32)
    cot = rng.standard_normal((7, 5)).astype(F32)
    prepared = prepare_qat(_tanh_loss(w, x, cot), bits=4, weight_scheme=scheme).graph
    got = Interpreter(grad(prepared, "loss", ["w"])).run({"x": x})["grad:w"]
    if scheme == "q4_1_blocks":  # (K, N) weight, blocks along K of W^T
        codes, d, m = qat_weights(w.T, scheme, 4, None)
        wq = (codes * d[..., None] + m[..., None]).reshape(5, -1)[:, :64].T
    else:
        codes, s, _ = qat_weights(w, scheme, 4, 1)
        wq = codes * s
    # d/dW through fake_quantize is the identity: the float gradient at the quantised weight
    np.testing.assert_allclose(got, x.T @ (cot * (1 - np.tanh(x @ wq) ** 2)), rtol=1e-4,
                               atol=1e-4)
    assert not np.allclose(got, x.T @ (cot * (1 - np.tanh(x @ w) ** 2)), atol=1e-3)


def test_training_step_on_a_traced_training_graph() -> None:
    manual_seed(2)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
    g = trace_loss(model, {"x": InputSpec(("N", 12))}, InputSpec(("N",), np.int64, "y"),
                   "cross_entropy", {}, training=True)
    res = prepare_qat(g, bits=4)
    assert res.stats["weights"] == 2 and res.graph.op_counts()["fake_quantize"] == 2
    step = make_train_step(res.graph, Adam(1e-2))
    assert all(p.endswith((".weight", ".bias")) for p in step.info.params)
    runner = NumpyStepRunner(step.graph, step.info.state, step.initial_state)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 12)).astype(F32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    losses = [float(runner.step({"x": x, "y": y})["loss"]) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    trained = res.graph.with_params({p: runner.state()[p] for p in step.info.params})
    conv = convert_qat(trained).graph  # the loss graph converts too
    assert conv.op_counts()["matmul_nbits"] == 2


@pytest.mark.parametrize("bits", [4, 8])
def test_matmul_nbits_gradient_matches_finite_differences(bits: int) -> None:
    rng = np.random.default_rng(bits)
    n, k, bs = 3, 48, 16
    nb = k // bs
    packed = rng.integers(0, 256, (n, nb, bs * bits // 8), dtype=np.uint8)
    scales = rng.uniform(0.05, 0.2, (n, nb)).astype(F32)
    a = rng.standard_normal((k, k)).astype(F32) / 8
    cot = rng.standard_normal((2, n)).astype(F32)
    with GraphBuilder("nbits_chain") as b:
        x = b.input("x", "f32", (2, k))
        h = ops.tanh(ops.matmul(x, b.param("a", a)))  # an adapter-like layer before the base
        y = ops.matmul_nbits(h, b.param("w", packed, trainable=False),
                             b.param("s", scales, trainable=False), None, K=k, N=n, bits=bits,
                             block_size=bs)
        loss = ops.reduce_sum(ops.mul(y, b.param("cot", cot, trainable=False)), axes=None,
                              keepdims=False)
        g = b.build({"loss": loss})
    x0 = rng.standard_normal((2, k)).astype(F32)
    gg = Interpreter(grad(g, "loss", ["x", "a"])).run({"x": x0})
    f = Interpreter(g)

    def loss_at(xv: np.ndarray) -> float:
        return float(f.run({"x": xv.astype(F32)})["loss"])

    eps = 1e-2
    for i, j in [(0, 0), (1, 17), (0, 47), (1, 30)]:
        e = np.zeros_like(x0)
        e[i, j] = eps
        fd = (loss_at(x0 + e) - loss_at(x0 - e)) / (2 * eps)
        assert gg["grad:x"][i, j] == pytest.approx(fd, rel=2e-2, abs=2e-3)
    assert np.abs(gg["grad:a"]).max() > 0  # the gradient reaches the layer before the base


def test_errors() -> None:
    g = mlp()
    with pytest.raises(OpError, match="unknown QAT weight scheme"):
        prepare_qat(g, weight_scheme="q3_k")
    with pytest.raises(OpError, match="has 4-bit codes, got bits=8"):
        prepare_qat(g, weight_scheme="q4_1_blocks", bits=8)
    with pytest.raises(OpError, match="needs a symmetric weight scheme"):
        prepare_qat(g, bits=4, weight_scheme="q4_0_blocks", activations=True)
    with pytest.raises(InputError, match="needs calibration_data and evaluate"):
        prepare_qat(g, activations=True)
    with pytest.raises(OpError, match="does not apply to conv"):
        prepare_qat(cnn(), bits=4, weight_scheme="q4_1_blocks", kinds=("conv",))
    with pytest.raises(OpError, match="has no QAT plan"):
        convert_qat(g)
    with pytest.raises(OpError, match="unknown loss"):
        add_loss(g, "hinge")
    with pytest.raises(InputError, match="already has a value 'y'"):
        add_loss(g, "mse")
    mse = add_loss(g, "mse", target="t")
    x, t = _x((4, 256)), _x((4, 10), seed=2)
    want = np.mean((evaluate(g, {"x": x})["y"] - t) ** 2)
    assert float(evaluate(mse, {"x": x, "t": t})["loss"]) == pytest.approx(want, rel=1e-5)


def test_static_qdq_gives_ort_integer_matmuls(tmp_path: Path) -> None:
    """A bias add after a quantised matmul would make ORT fuse a float Gemm (and dequantise
    the weights on every call); the output QDQ keeps it on QLinearMatMul."""
    from lbdl_graph.frontends.zoo import ZOO

    manual_seed(0)
    g = ZOO["mlp"].trace()
    x = np.random.default_rng(0).random((16, 784), dtype=F32)
    kinds = {}
    for before_add in (True, False):
        q = quantize_static(g, {"x": x}, evaluate=evaluate,
                            requantize_before_add=before_add).graph
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"{before_add}.onnx")
        ort.InferenceSession(to_onnx(q).SerializeToString(), so,
                             providers=["CPUExecutionProvider"])
        kinds[before_add] = {n.op_type for n in
                             onnx.load(so.optimized_model_filepath).graph.node}
    assert "QLinearMatMul" in kinds[True] and not kinds[True] & {"Gemm", "FusedGemm", "MatMul"}
    assert kinds[False] & {"Gemm", "FusedGemm"}  # the slow path this placement avoids
