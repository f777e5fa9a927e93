"""``generate`` and sampling: determinism, filters, stop ids, context limit and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.errors import GenerationError, LbdlError
from lbdl_graph.frontends.generation import KVRunner, SamplingConfig, choose, generate
from lbdl_graph.frontends.generation.sampling import (
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
)

from .helpers import CONTEXT, VOCAB, tiny_graphs

PROMPT = [3, 17, 5, 9]


def _runner() -> KVRunner:
    return KVRunner.numpy(tiny_graphs())


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    kw = {"temperature": 1.5, "top_k": 20, "top_p": 0.95}
    a = generate(_runner(), PROMPT, 12, seed=7, **kw).tokens
    b = generate(_runner(), PROMPT, 12, seed=7, **kw).tokens
    c = generate(_runner(), PROMPT, 12, seed=8, **kw).tokens
    assert a == b
    assert a != c


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    greedy = generate(_runner(), PROMPT, 8).tokens
    assert generate(_runner(), PROMPT, 8, temperature=2.0, top_k=1, seed=1).tokens == greedy
    assert generate(_runner(), PROMPT, 8, temperature=2.0, top_p=1e-6, seed=1).tokens == greedy


def test_filters() -> None:
    x = np.array([[1.0, 3.0, 2.0, 0.5]])
    np.testing.assert_array_equal(filter_top_k(x, 2), [[-np.inf, 3.0, 2.0, -np.inf]])
    # softmax of x: 0.086, 0.636, 0.234, 0.052: 0.6 needs one token, 0.7 two, 0.9 three
    assert np.isfinite(filter_top_p(x, 0.6)).sum() == 1
    assert np.isfinite(filter_top_p(x, 0.7)).sum() == 2
    assert np.isfinite(filter_top_p(x, 0.9)).sum() == 3
    seen = np.array([[True, True, False, False]])
    np.testing.assert_allclose(apply_repetition_penalty(np.array([[2.0, -2.0, 1.0, 1.0]]), seen,
                                                        2.0), [[1.0, -4.0, 1.0, 1.0]])


def test_sampling_follows_the_distribution() -> None:
    logits = np.log(np.array([[0.1, 0.6, 0.3]]))
    rng = np.random.default_rng(0)
    cfg = SamplingConfig(temperature=1.0)
    draws = np.array([choose(logits, cfg, rng)[0] for _ in range(4000)])
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.03)
    hot = SamplingConfig(temperature=0.5)  # p^2 normalised: 0.022, 0.783, 0.196
    draws = np.array([choose(logits, hot, rng)[0] for _ in range(4000)])
    assert abs(np.mean(draws == 1) - 0.783) < 0.03


def test_repetition_penalty_changes_greedy_output() -> None:
    plain = generate(_runner(), PROMPT, 12).tokens[0]
    penalised = generate(_runner(), PROMPT, 12, repetition_penalty=5.0).tokens[0]
    assert penalised != plain
    assert len(set(penalised)) >= len(set(plain))


def test_stop_ids_end_each_row() -> None:
    full = generate(_runner(), [PROMPT, [1, 2]], 10)
    stop = full.tokens[0][2]
    out = generate(_runner(), [PROMPT, [1, 2]], 10, stop_ids=[stop])
    assert out.tokens[0] == full.tokens[0][:full.tokens[0].index(stop) + 1]
    assert out.stop_reasons[0] == "stop"
    row1 = full.tokens[1]
    want = row1[:row1.index(stop) + 1] if stop in row1 else row1
    assert out.tokens[1] == want
    assert out.message is None


def test_full_context_stops_cleanly_with_a_message() -> None:
    prompt = list(range(CONTEXT - 3))
    out = generate(_runner(), prompt, 10)
    assert len(out.tokens[0]) == 3 and len(out.sequences[0]) == CONTEXT
    assert out.stop_reasons == ["context"]
    assert out.message is not None and "context of 24 tokens is full" in out.message
    full = generate(_runner(), list(range(CONTEXT)), 5)
    assert full.tokens == [[]] and full.stop_reasons == ["context"]
    assert generate(_runner(), prompt, 3).message is None


def test_streaming_callback_and_timings() -> None:
    seen: list[tuple[int, list[int]]] = []
    out = generate(_runner(), [PROMPT, [4, 4]], 5,
                   on_token=lambda step, toks, done: seen.append((step, toks.tolist())))
    assert [s for s, _ in seen] == list(range(5))
    assert [t for _, t in seen] == [list(x) for x in zip(*out.tokens, strict=True)]
    assert out.prefill_s > 0 and len(out.step_s) == 4 and out.decode_tokens_per_s > 0
    assert out.cache_peak_bytes > 0


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"prompt_ids": list(range(CONTEXT + 1))}, "longer than the model's context of 24"),
    ({"prompt_ids": [1, VOCAB]}, f"token id {VOCAB} is not in the vocabulary"),
    ({"prompt_ids": [1, -1]}, "token id -1 is not in the vocabulary"),
    ({"prompt_ids": [[1], []]}, "prompt 1 is empty"),
    ({"prompt_ids": []}, "empty"),
    ({"prompt_ids": "abc"}, "list of token ids"),
    ({"prompt_ids": [1.5]}, "not an integer"),
    ({"temperature": -0.1}, "temperature must be"),
    ({"temperature": float("nan")}, "temperature must be"),
    ({"top_k": 0}, "top_k must be"),
    ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"repetition_penalty": 0.0}, "repetition_penalty must be"),
    ({"max_new_tokens": -1}, "max_new_tokens must be"),
    ({"stop_ids": [VOCAB + 3]}, "stop ids"),
    ({"pad_id": VOCAB}, "pad_id"),
    ({"backend": "tpu"}, "unknown backend"),
])
def test_bad_input_is_a_typed_error(kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"prompt_ids": PROMPT, "max_new_tokens": 3, **kwargs}
    target = tiny_graphs() if "backend" in kwargs else _runner()
    with pytest.raises(GenerationError) as e:
        generate(target, **args)  # type: ignore[arg-type]
    assert isinstance(e.value, LbdlError)
    assert words in str(e.value)


def test_generate_refuses_things_that_are_not_models() -> None:
    with pytest.raises(GenerationError, match="needs a Module"):
        generate(object(), PROMPT, 2)
