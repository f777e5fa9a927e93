"""fp16 / bf16 inference graphs: fp32 LayerNorm and softmax, logits close to fp32, half size."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.errors import OpError
from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.generation import KVRunner, generate, ort_kv_runner, trace_generation
from lbdl_graph.frontends.generation.bundle import prepare_graphs
from lbdl_graph.frontends.zoo import GPT, GPTConfig
from lbdl_graph.passes.precision import convert_precision

from .helpers import Recording

IDS = np.array([[0, 0, 7, 3, 200, 41, 9, 17], [5, 1, 7, 3, 200, 41, 9, 17]])
MASK = np.array([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])


@pytest.fixture(scope="module")
def graphs():  # type: ignore[no-untyped-def]
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, context=32, num_layers=2, d_model=64, num_heads=4,
                          dropout=0.0, init_std=0.1))
    return trace_generation(model)


def _logits(g, backend: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    feeds = {"input_ids": IDS, "attention_mask": MASK}
    if backend == "numpy":
        return run(g, feeds, training=False)["logits"]
    return OrtRunner(g, providers="cpu").run(feeds)["logits"]


@pytest.mark.parametrize(("to", "tol"), [("float16", 1e-2), ("bfloat16", 6e-2)])
def test_half_prefill_is_close_and_half_the_size(graphs, to: str, tol: float) -> None:  # type: ignore[no-untyped-def]
    half = convert_precision(graphs.prefill, to).graph
    ref = _logits(graphs.prefill, "numpy")
    for backend in ("numpy", "onnxruntime"):
        got = _logits(half, backend)
        assert got.dtype == np.float32 and np.isfinite(got).all()  # padded rows too
        assert np.abs(got - ref).max() < tol, (backend, np.abs(got - ref).max())
    full, small = (to_onnx(g, training=False) for g in (graphs.prefill, half))
    weights = [sum(len(t.raw_data) for t in m.graph.initializer) for m in (full, small)]
    assert weights[1] < 0.51 * weights[0]
    if to == "float16":  # bf16 adds casts around ops ORT's CPU cannot run in bf16
        assert len(small.SerializeToString()) < 0.56 * len(full.SerializeToString())
    norm = [n for n in half.nodes if n.op.name in ("layer_norm", "softmax")]
    assert norm and all(x.type.dtype.name == "float32" for n in norm for x in n.inputs
                        if x is not None)
    mm = [n for n in half.nodes if n.op.name == "matmul"]
    assert mm and all(n.outputs[0].type.dtype.name == to for n in mm)


def test_fp16_kv_cache_decodes_like_fp32(graphs) -> None:  # type: ignore[no-untyped-def]
    half = prepare_graphs(graphs, precision="float16")
    assert half.decode.inputs[2].type.dtype.name == "float16"  # the cache itself is fp16
    prompt = [7, 3, 200, 41, 9]
    a, b = Recording(KVRunner.numpy(graphs)), Recording(
        ort_kv_runner(half.prefill, half.decode, 256, 32, providers="cpu"))
    assert generate(a, prompt, 10).tokens == generate(b, prompt, 10).tokens
    for x, y in zip(a.logits, b.logits, strict=True):
        assert np.abs(x - y).max() < 1e-2
    assert b.cache_bytes() * 2 == a.cache_bytes()


def test_convert_precision_rejects_bad_arguments(graphs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OpError, match="unknown type"):
        convert_precision(graphs.prefill, "float8")
    with pytest.raises(OpError, match="not inputs or outputs"):
        convert_precision(graphs.prefill, "float16", narrow_io=["nope"])
