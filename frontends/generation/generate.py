"""``generate``: autoregressive decoding with a KV cache, batched with left padding.

Prompts of different lengths are padded on the left and masked (``attention_mask`` 0 at
padding), so every row produces the tokens it would produce alone. A row stops at one of its
``stop_ids``; the batch stops when every row has, after ``max_new_tokens``, or when the
longest row fills the model's context, which ends generation cleanly with a message in
:attr:`Generation.message`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lbdl_graph.errors import GenerationError

from ..module import Module
from .graphs import GenerationGraphs, trace_generation
from .runners import KVRunner, StepRunner, ort_kv_runner
from .sampling import SamplingConfig, choose, seen_tokens

__all__ = ["Generation", "as_runner", "generate", "prepare_prompts"]

#: called after each new token with (step, tokens of this step (N,), finished rows (N,) bool)
TokenCallback = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass
class Generation:
    """What ``generate`` returns.

    Attributes:
        prompts: the prompt of each row.
        tokens: the new tokens of each row (stop ids included, nothing after them).
        stop_reasons: per row ``"stop"`` (a stop id), ``"length"`` (max_new_tokens) or
            ``"context"`` (the context is full).
        message: why generation ended early, or None.
        prefill_s: seconds of the prompt pass (and the first token's choice).
        step_s: seconds of each later token (one decode step and its choice).
        cache_peak_bytes: the K/V cache at its largest.
    """

    prompts: list[list[int]]
    tokens: list[list[int]]
    stop_reasons: list[str]
    message: str | None = None
    prefill_s: float = 0.0
    step_s: list[float] = field(default_factory=list)
    cache_peak_bytes: int = 0

    @property
    def sequences(self) -> list[list[int]]:
        """Prompt followed by the new tokens, per row."""
        return [p + t for p, t in zip(self.prompts, self.tokens, strict=True)]

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second of the decode steps (every row's token counts once per step)."""
        total = sum(self.step_s)
        return len(self.step_s) * len(self.prompts) / total if total > 0 else float("nan")


def as_runner(model_or_runner: Any, *, backend: str = "numpy", threads: int | None = None
              ) -> StepRunner:
    """A step runner from a Module (traced with a KV cache), GenerationGraphs or a runner."""
    if hasattr(model_or_runner, "start") and hasattr(model_or_runner, "step"):
        return model_or_runner
    if isinstance(model_or_runner, Module):
        graphs = trace_generation(model_or_runner)
    elif isinstance(model_or_runner, GenerationGraphs):
        graphs = model_or_runner
    else:
        raise GenerationError(f"generate needs a Module, GenerationGraphs or a step runner, got "
                              f"{type(model_or_runner).__name__}")
    if backend == "numpy":
        return KVRunner.numpy(graphs)
    if backend in ("onnxruntime", "ort"):
        return ort_kv_runner(graphs.prefill, graphs.decode, graphs.vocab_size, graphs.context,
                             threads=threads, providers="cpu" if graphs.shared else None,
                             shared=graphs.shared)
    raise GenerationError(f"unknown backend {backend!r}; use 'numpy' or 'onnxruntime'")


def _rows(prompt_ids: Any) -> list[list[int]]:
    if isinstance(prompt_ids, np.ndarray):
        if prompt_ids.ndim not in (1, 2) or prompt_ids.dtype.kind not in "iu":
            raise GenerationError(f"prompt_ids must be integer token ids, 1-D or 2-D; got "
                                  f"{prompt_ids.dtype}{list(prompt_ids.shape)}")
        prompt_ids = prompt_ids.tolist()
    if not isinstance(prompt_ids, Sequence) or isinstance(prompt_ids, str | bytes):
        raise GenerationError(f"prompt_ids must be a list of token ids or a list of such "
                              f"lists, got {type(prompt_ids).__name__}")
    if not prompt_ids:
        raise GenerationError("prompt_ids is empty")
    nested = isinstance(prompt_ids[0], Sequence | np.ndarray)
    rows = [list(r) for r in prompt_ids] if nested else [list(prompt_ids)]
    for i, r in enumerate(rows):
        if not r:
            raise GenerationError(f"prompt {i} is empty; generation needs at least one token")
        for j, t in enumerate(r):
            if isinstance(t, bool) or not isinstance(t, int | np.integer):
                raise GenerationError(f"prompt {i}, position {j}: token id {t!r} is not an "
                                      "integer")
    return [[int(t) for t in r] for r in rows]


def prepare_prompts(prompt_ids: Any, vocab_size: int, context: int | None, pad_id: int = 0
                    ) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Validated rows, and the left-padded ids and mask (N, T) int64."""
    rows = _rows(prompt_ids)
    for i, r in enumerate(rows):
        bad = [(j, t) for j, t in enumerate(r) if not 0 <= t < vocab_size]
        if bad:
            j, t = bad[0]
            raise GenerationError(f"prompt {i}, position {j}: token id {t} is not in the "
                                  f"vocabulary [0, {vocab_size})"
                                  + (f" ({len(bad)} such ids)" if len(bad) > 1 else ""))
        if context is not None and len(r) > context:
            raise GenerationError(f"prompt {i} has {len(r)} tokens, longer than the model's "
                                  f"context of {context}",
                                  hint=f"keep the last {context} tokens")
    if not 0 <= pad_id < vocab_size:
        raise GenerationError(f"pad_id {pad_id} is not in the vocabulary [0, {vocab_size})")
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return rows, ids, mask


def _check_count(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
        raise GenerationError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


def generate(model_or_runner: Any, prompt_ids: Any, max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             repetition_penalty: float = 1.0, stop_ids: Sequence[int] = (),
             seed: int | None = None, pad_id: int = 0, backend: str = "numpy",
             threads: int | None = None, on_token: TokenCallback | None = None) -> Generation:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model_or_runner: a causal LM Module, its :class:`GenerationGraphs` or a step runner
            (e.g. :func:`~.runners.ort_kv_runner` over exported ONNX files).
        prompt_ids: token ids, or a list of prompts (any lengths; left padded).
        temperature, top_k, top_p, repetition_penalty: see :class:`SamplingConfig`;
            temperature 0 (the default) is greedy.
        stop_ids: tokens that end a row (kept in its output).
        seed: seeds the sampler's ``numpy.random.Generator`` (same seed, same tokens).
        backend: "numpy" or "onnxruntime", when a Module or graphs are given.
        on_token: called after every step (streaming).
    """
    config = SamplingConfig(float(temperature) if isinstance(temperature, int) else temperature,
                            top_k, top_p, repetition_penalty)
    n_new = _check_count("max_new_tokens", max_new_tokens, 0)
    runner = as_runner(model_or_runner, backend=backend, threads=threads)
    vocab, context = runner.vocab_size, runner.context
    stops = {_check_count("stop id", s, 0) for s in stop_ids}
    if any(s >= vocab for s in stops):
        raise GenerationError(f"stop ids {sorted(s for s in stops if s >= vocab)} are not in "
                              f"the vocabulary [0, {vocab})")
    rows, ids, mask = prepare_prompts(prompt_ids, vocab, context, pad_id)
    rng = np.random.default_rng(seed)
    n = len(rows)
    out: list[list[int]] = [[] for _ in rows]
    reasons = ["length"] * n
    done = np.zeros(n, bool)
    seen = seen_tokens(rows, vocab) if config.repetition_penalty != 1.0 else None
    lengths = np.array([len(r) for r in rows])
    room = n_new if context is None else min(n_new, int(context - lengths.max()))
    gen = Generation(rows, out, reasons)
    full = (f"the context of {context} tokens is full after {max(room, 0)} new tokens (of "
            f"{n_new} asked): stopped there")
    if room <= 0:
        if n_new:
            gen.stop_reasons, gen.message = ["context"] * n, full
        return gen
    reserve = getattr(runner, "reserve", None)
    if callable(reserve):  # a shared cache allocates what this call needs, once
        reserve(int(ids.shape[1]) + room)
    t0 = time.perf_counter()
    logits = runner.start(ids, mask)
    for step in range(room):
        nxt = choose(logits, config, rng, seen)
        for i in np.flatnonzero(~done):
            t = int(nxt[i])
            out[i].append(t)
            if seen is not None:
                seen[i, t] = True
            if t in stops:
                done[i], reasons[i] = True, "stop"
        if on_token is not None:
            on_token(step, nxt, done.copy())
        now = time.perf_counter()
        if step == 0:
            gen.prefill_s = now - t0
        else:
            gen.step_s.append(now - t0)
        t0 = now
        gen.cache_peak_bytes = max(gen.cache_peak_bytes, runner.cache_bytes())
        if done.all() or step == room - 1:
            break
        mask = np.concatenate([mask, np.ones((n, 1), np.int64)], 1)
        logits = runner.step(nxt[:, None], mask)
    if room < n_new and not done.all():
        gen.message = full
        for i in np.flatnonzero(~done):
            reasons[i] = "context"
    return gen
