"""KV-cache prefill/decode graphs: every step equals a full recompute, on NumPy and ORT."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.onnx import to_onnx
from lbdl_graph.errors import GraphError
from lbdl_graph.frontends.generation import (
    KVRunner,
    RecomputeRunner,
    generate,
    ort_kv_runner,
    trace_generation,
    trace_recompute,
)
from lbdl_graph.frontends.layers import Linear
from lbdl_graph.frontends.module import Module
from lbdl_graph.frontends.tensor import Tensor

from .helpers import CONTEXT, VOCAB, Recording, SinusoidalLM, tiny_gpt, tiny_graphs

PROMPT = [3, 17, 5, 9, 22, 1]


def _greedy(runner: object, prompt: object, n: int) -> tuple[list[list[int]], list[np.ndarray]]:
    rec = Recording(runner)
    out = generate(rec, prompt, n)
    return out.tokens, rec.logits


@pytest.mark.parametrize("tie", [True, False])
def test_kv_logits_equal_recompute_at_every_step(tie: bool) -> None:
    model = tiny_gpt(1, tie=tie)
    graphs = trace_generation(model)
    kv_tokens, kv = _greedy(KVRunner.numpy(graphs), PROMPT, 12)
    ref_tokens, ref = _greedy(RecomputeRunner(trace_recompute(model), VOCAB, CONTEXT),
                              PROMPT, 12)
    assert kv_tokens == ref_tokens
    assert len(kv) == len(ref) == 12
    for step, (a, b) in enumerate(zip(kv, ref, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=f"step {step}")
    assert len(set(kv_tokens[0])) > 1  # the test model does not just repeat one token


def test_ort_equals_numpy_at_every_step() -> None:
    graphs = tiny_graphs()
    np_tokens, np_logits = _greedy(KVRunner.numpy(graphs), PROMPT, 10)
    ort = ort_kv_runner(graphs.prefill, graphs.decode, graphs.vocab_size, graphs.context,
                        threads=1, providers="cpu")
    ort_tokens, ort_logits = _greedy(ort, PROMPT, 10)
    assert ort_tokens == np_tokens
    for a, b in zip(ort_logits, np_logits, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_ort_without_io_binding_matches() -> None:
    graphs = tiny_graphs()
    a = ort_kv_runner(graphs.prefill, graphs.decode, VOCAB, CONTEXT, providers="cpu")
    b = ort_kv_runner(graphs.prefill, graphs.decode, VOCAB, CONTEXT, providers="cpu",
                      io_binding=False)
    ta, la = _greedy(a, PROMPT, 6)
    tb, lb = _greedy(b, PROMPT, 6)
    assert ta == tb
    np.testing.assert_array_equal(np.stack(la), np.stack(lb))
    assert a.cache_bytes() == b.cache_bytes() == 2 * 2 * 2 * (len(PROMPT) + 5) * 8 * 4


def test_left_padded_batch_equals_each_row_alone() -> None:
    graphs = tiny_graphs()
    prompts = [[4, 8, 15], PROMPT, [30, 2, 11, 7]]
    batch_tokens, batch = _greedy(KVRunner.numpy(graphs), prompts, 8)
    for i, p in enumerate(prompts):
        alone_tokens, alone = _greedy(KVRunner.numpy(graphs), p, 8)
        assert batch_tokens[i] == alone_tokens[0]
        for a, b in zip(batch, alone, strict=True):
            np.testing.assert_allclose(a[i], b[0], atol=1e-5, rtol=0)


def test_padded_batch_on_ort_and_recompute_through_the_prefill_graph() -> None:
    graphs = tiny_graphs()
    prompts = [[4, 8, 15], PROMPT]
    kv_tokens, kv = _greedy(ort_kv_runner(graphs.prefill, graphs.decode, VOCAB, CONTEXT,
                                          providers="cpu"), prompts, 6)
    rc_tokens, rc = _greedy(RecomputeRunner(graphs.prefill, VOCAB, CONTEXT), prompts, 6)
    assert kv_tokens == rc_tokens
    np.testing.assert_allclose(np.stack(kv), np.stack(rc), atol=1e-5, rtol=0)


def test_other_model_gets_a_cache_without_model_code() -> None:
    model = SinusoidalLM()
    graphs = trace_generation(model, context=CONTEXT)
    assert len(graphs.layers) == 2 and graphs.layers[0].path == "blocks.0.attn"
    kv_tokens, kv = _greedy(KVRunner.numpy(graphs), PROMPT, 6)
    rc_tokens, rc = _greedy(RecomputeRunner(trace_recompute(model), VOCAB, CONTEXT), PROMPT, 6)
    assert kv_tokens == rc_tokens
    np.testing.assert_allclose(np.stack(kv), np.stack(rc), atol=1e-5, rtol=0)


def test_exported_decode_has_a_dynamic_past_and_standard_ops() -> None:
    graphs = tiny_graphs()
    model = to_onnx(graphs.decode)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims["past_key_values.0.key"] == ["N", 2, "P", 8]
    assert dims["attention_mask"] == ["N", "P+1"]
    assert {o.name for o in model.graph.output} >= {"logits", "present.1.value"}
    assert "Concat" in {n.op_type for n in model.graph.node}
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)


def test_cache_bytes_grow_by_one_position_per_step() -> None:
    runner = KVRunner.numpy(tiny_graphs())
    mask = np.ones((1, 3), np.int64)
    runner.start(np.array([[1, 2, 3]]), mask)
    first = runner.cache_bytes()
    runner.step(np.array([[4]]), np.ones((1, 4), np.int64))
    per_position = 2 * 2 * 2 * 8 * 4  # layers * (k, v) * heads * head_dim * fp32
    assert first == 3 * per_position and runner.cache_bytes() == 4 * per_position


def test_model_without_causal_attention_is_refused() -> None:
    class NoAttention(Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = Linear(1, VOCAB)

        def forward(self, idx: Tensor) -> Tensor:
            return self.out(idx.float().unsqueeze(2))

    with pytest.raises(GraphError, match="no causal self-attention"):
        trace_generation(NoAttention())


def test_step_before_start_is_a_typed_error() -> None:
    from lbdl_graph.errors import GenerationError

    with pytest.raises(GenerationError, match="before start"):
        KVRunner.numpy(tiny_graphs()).step(np.array([[1]]), np.ones((1, 1), np.int64))
