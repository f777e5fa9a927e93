"""The opt-in shared, in-place KV cache (``shared_cache=True``): every step equals a full
recompute and the default cache, on NumPy and on ONNX Runtime's GroupQueryAttention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.backends.onnx import to_onnx
from lbdl_graph.errors import GenerationError, OnnxError
from lbdl_graph.frontends.generation import (
    GenerationGraphs,
    KVRunner,
    RecomputeRunner,
    generate,
    ort_kv_runner,
    trace_generation,
    trace_recompute,
)
from lbdl_graph.frontends.generation.bundle import export_generation, load_generation

from .helpers import CONTEXT, VOCAB, Recording, SinusoidalLM, tiny_gpt, tiny_graphs

PROMPT = [3, 17, 5, 9, 22, 1]
_SHARED: dict[int, GenerationGraphs] = {}


def _shared(seed: int = 0) -> GenerationGraphs:
    if seed not in _SHARED:
        _SHARED[seed] = trace_generation(tiny_gpt(seed), shared_cache=True)
    return _SHARED[seed]


def _ort(graphs: GenerationGraphs) -> KVRunner:
    return ort_kv_runner(graphs.prefill, graphs.decode, VOCAB, CONTEXT, threads=1,
                         providers="cpu", shared=graphs.shared)


def _greedy(runner: object, prompt: object, n: int) -> tuple[list[list[int]], list[np.ndarray]]:
    rec = Recording(runner)
    out = generate(rec, prompt, n)
    return out.tokens, rec.logits


@pytest.mark.parametrize("tie", [True, False])
def test_shared_logits_equal_recompute_at_every_step(tie: bool) -> None:
    model = tiny_gpt(1, tie=tie)
    graphs = trace_generation(model, shared_cache=True)
    ref_tokens, ref = _greedy(RecomputeRunner(trace_recompute(model), VOCAB, CONTEXT),
                              PROMPT, 12)
    for runner in (KVRunner.numpy(graphs), _ort(graphs)):
        tokens, logits = _greedy(runner, PROMPT, 12)
        assert tokens == ref_tokens
        assert len(logits) == 12
        for step, (a, b) in enumerate(zip(logits, ref, strict=True)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=f"step {step}")
    assert len(set(ref_tokens[0])) > 1


def test_ort_equals_numpy_and_the_concat_cache() -> None:
    np_tokens, np_logits = _greedy(KVRunner.numpy(_shared()), PROMPT, 10)
    ort_tokens, ort_logits = _greedy(_ort(_shared()), PROMPT, 10)
    concat = tiny_graphs()
    cat_tokens, cat_logits = _greedy(ort_kv_runner(concat.prefill, concat.decode, VOCAB,
                                                   CONTEXT, providers="cpu"), PROMPT, 10)
    assert ort_tokens == np_tokens == cat_tokens
    for a, b, c in zip(ort_logits, np_logits, cat_logits, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a, c, atol=1e-5, rtol=0)


def test_unpadded_batch_equals_each_row_alone() -> None:
    prompts = [PROMPT, [30, 2, 11, 7, 4, 8]]
    batch_tokens, batch = _greedy(_ort(_shared()), prompts, 8)
    for i, p in enumerate(prompts):
        alone_tokens, alone = _greedy(KVRunner.numpy(_shared()), p, 8)
        assert batch_tokens[i] == alone_tokens[0]
        for a, b in zip(batch, alone, strict=True):
            np.testing.assert_allclose(a[i], b[0], atol=1e-5, rtol=0)


def test_ort_writes_the_bound_buffers_in_place() -> None:
    runner = _ort(_shared())
    runner.reserve(10)
    runner.start(np.array([PROMPT]), np.ones((1, 6), np.int64))
    buffers = dict(runner._state)
    key = buffers["past_key_values.1.key"]
    assert key.shape == (1, 2, 10, 8) and not key[:, :, 6:].any()
    ref = KVRunner.numpy(_shared())
    ref.reserve(10)
    ref.start(np.array([PROMPT]), np.ones((1, 6), np.int64))
    for step, t in enumerate([4, 9]):
        mask = np.ones((1, 7 + step), np.int64)
        runner.step(np.array([[t]]), mask)
        ref.step(np.array([[t]]), mask)
    assert all(runner._state[k] is v for k, v in buffers.items())  # the same arrays
    assert key[:, :, 7].any() and not key[:, :, 8:].any()
    for k, v in ref._state.items():
        np.testing.assert_allclose(runner._state[k], v, atol=1e-5, rtol=0)
    assert runner.cache_bytes() == 2 * 2 * 2 * 10 * 8 * 4


def test_decode_graph_uses_group_query_attention_and_no_concat() -> None:
    model = to_onnx(_shared().decode)
    kinds = {n.op_type for n in model.graph.node}
    assert "GroupQueryAttention" in kinds and "Concat" not in kinds
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims["past_key_values.0.key"] == ["N", 2, "M", 8]
    with pytest.raises(OnnxError, match="lowers only to ONNX Runtime"):
        to_onnx(_shared().decode, target="portable")


def test_bad_uses_are_typed_errors() -> None:
    with pytest.raises(GenerationError, match="unpadded prompts only"):
        generate(_ort(_shared()), [PROMPT, [4, 8]], 4)
    runner = KVRunner.numpy(_shared())
    runner.reserve(7)
    runner.start(np.array([PROMPT]), np.ones((1, 6), np.int64))
    runner.step(np.array([[1]]), np.ones((1, 7), np.int64))
    with pytest.raises(GenerationError, match="past the capacity of 7"):
        runner.step(np.array([[1]]), np.ones((1, 8), np.int64))
    odd = trace_generation(SinusoidalLM(), context=CONTEXT, shared_cache=True)  # head size 4
    numpy_tokens, _ = _greedy(KVRunner.numpy(odd), PROMPT, 4)
    assert len(numpy_tokens[0]) == 4
    with pytest.raises(OnnxError, match="multiple of 8"):
        to_onnx(odd.decode)


def test_shared_bundle_runs_fp32_and_q8(tmp_path: Path) -> None:
    model = tiny_gpt(4)
    ref = generate(model, [1, 5, 9, 2], 8).tokens
    for q in (None, "q8_0"):
        d = tmp_path / f"shared-{q}"
        export_generation(model, d, quantize=q, shared_cache=True)
        b = load_generation(d, threads=1)
        assert b.config["cache"] == "shared" and b.runner.shared
        assert generate(b.runner, [1, 5, 9, 2], 8).tokens == ref, q
    with pytest.raises(GenerationError, match="float32"):
        export_generation(model, tmp_path / "half", precision="float16", shared_cache=True)
