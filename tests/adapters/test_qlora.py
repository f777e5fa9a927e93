"""QLoRA: float adapters trained beside a frozen weight-quantised base, on NumPy and ORT."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter, run
from lbdl_graph.backends.numpy.kernels.quant import nbits_weight
from lbdl_graph.backends.onnx import OrtRunner
from lbdl_graph.errors import OpError
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.lora import add_lora, load_adapters, merge_lora, save_adapters
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.quant import quantize_weights
from lbdl_graph.passes.train_step import make_train_step

from .helpers import batch, gpt, train


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("zp", ["default", "float", "packed"])
def test_matmul_nbits_gradient_wrt_x_uses_the_dequantised_weight(bits: int, zp: str) -> None:
    rng = np.random.default_rng(bits)
    n, k, bs = 5, 40, 32  # K is not a multiple of the block: the padding is cut off
    nb = -(-k // bs)
    packed = rng.integers(0, 256, (n, nb, bs * bits // 8), dtype=np.uint8)
    scales = rng.uniform(0.5, 1.5, (n, nb)).astype(np.float32)
    zps = {"default": None, "float": rng.uniform(0, 2**bits - 1, (n, nb)).astype(np.float32),
           "packed": rng.integers(0, 256, (n, -(-nb * bits // 8)), dtype=np.uint8)}[zp]
    cot = rng.standard_normal((2, 3, n)).astype(np.float32)
    with GraphBuilder("nbits") as b:
        x = b.input("x", "f32", (2, 3, k))
        zv = None if zps is None else b.param("zp", zps)
        y = ops.matmul_nbits(x, b.param("w", packed), b.param("s", scales), zv, K=k, N=n,
                             bits=bits, block_size=bs)
        loss = ops.reduce_sum(ops.mul(y, b.param("cot", cot)), axes=None, keepdims=False)
        g = b.build({"loss": loss})
    assert ops.matmul_nbits.differentiable
    xv = rng.standard_normal((2, 3, k)).astype(np.float32)
    got = run(grad(g, "loss", ["x"]), {"x": xv})["grad:x"]
    w = nbits_weight(packed, scales, zps, K=k, bits=bits, block_size=bs)
    np.testing.assert_allclose(got, cot @ w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("scheme", ["q4_0", "q4_1", "int8"])
def test_qlora_trains_adapters_beside_a_frozen_quantised_base(scheme: str) -> None:
    _, _, loss_g = gpt()
    q = quantize_weights(loss_g, scheme).graph
    res = add_lora(q, rank=4, alpha=8)
    lg = res.graph
    layouts = {a["layout"] for a in lg.metadata["lora"]["adapters"].values()}
    assert layouts == {"dq" if scheme == "int8" else "nbits"}
    assert res.stats["adapters"] == 4
    np.testing.assert_array_equal(run(lg, batch())["loss"], run(q, batch())["loss"])
    assert all(p.data.dtype == np.float32 for p in lg.params if p.trainable)
    assert not any(p.trainable for p in lg.params if p.data.dtype != np.float32)
    trained, losses, names = train(lg, steps=15)
    assert all(n.endswith((".lora_A", ".lora_B")) for n in names) and len(names) == 8
    assert losses[-1] < losses[0] - 0.1, losses
    for p in q.params:  # the quantised base (codes, scales) and every float param unchanged
        np.testing.assert_array_equal(trained.param_map[p.name].data, p.data)


def test_qlora_runs_on_onnx_runtime_like_numpy() -> None:
    _, logits_g, loss_g = gpt()
    lora = add_lora(quantize_weights(loss_g, "q4_0").graph, rank=4, alpha=8).graph
    trained, _, names = train(lora, steps=5)
    assert "matmul_nbits" in trained.op_counts()
    data = batch(seed=3)
    np.testing.assert_allclose(OrtRunner(trained, providers="cpu").run(data)["loss"],
                               run(trained, data)["loss"], rtol=1e-5)
    served = add_lora(quantize_weights(logits_g, "q4_0").graph, rank=4, alpha=8).graph
    served = served.with_params({n: trained.param_map[n].data for n in names})
    feeds = {"idx": data["idx"]}
    np.testing.assert_allclose(OrtRunner(served, providers="cpu").run(feeds)["output"],
                               run(served, feeds)["output"], atol=1e-4)
    # one whole training step (with the matmul_nbits VJP) on ORT, against NumPy
    step = make_train_step(trained, Adam(1e-2))
    feeds = {**data, **step.initial_state}
    want = Interpreter(step.graph).run(feeds)
    got = OrtRunner(step.graph, providers="cpu").run(feeds)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    for n in names:
        np.testing.assert_allclose(got[f"{n}:next"], want[f"{n}:next"], atol=1e-5)


def test_qlora_adapters_merge_into_the_float_base(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, logits_g, _ = gpt()
    ql = add_lora(quantize_weights(logits_g, "q4_1").graph, rank=4).graph
    ql = ql.with_params({p.name: np.full(p.data.shape, 0.01, np.float32)
                         for p in ql.params if p.name.endswith(".lora_B")})
    with pytest.raises(OpError, match=r"layers\.0\.attn\.in_proj_weight.*are quantised"):
        merge_lora(ql)
    path = save_adapters(ql, tmp_path / "qlora.safetensors")
    fl = load_adapters(logits_g, path)  # same base fingerprint as the quantised graph
    merged = merge_lora(fl).graph
    assert str(merged) == str(logits_g)
    feeds = {"idx": batch()["idx"]}
    # the merged float model is the QLoRA model up to the quantisation error of the base
    err = np.abs(run(merged, feeds)["output"] - run(ql, feeds)["output"]).max()
    base_err = np.abs(run(logits_g, feeds)["output"]
                      - run(quantize_weights(logits_g, "q4_1").graph, feeds)["output"]).max()
    assert err < 2 * base_err + 1e-3
