"""A tiny character GPT learns the Python standard library's source: loss falls well below the
unigram entropy (what a model that ignores context can reach)."""

from __future__ import annotations

import inspect
import json

import numpy as np

from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo.gpt import GPT, GPTConfig
from lbdl_graph.passes.optim import Adam, CosineLR, WarmupLR

CONTEXT = 32


def corpus() -> str:
    """A few KB of real Python: the source of the standard library's json package."""
    return inspect.getsource(json)[:6000]


def test_char_gpt_beats_unigram_entropy() -> None:
    text = corpus()
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], np.int64)
    counts = np.bincount(ids, minlength=len(chars)) / len(ids)
    unigram = float(-(counts[counts > 0] * np.log(counts[counts > 0])).sum())
    starts = np.arange(0, len(ids) - CONTEXT - 1, 4)
    x = np.stack([ids[s:s + CONTEXT] for s in starts])
    y = np.stack([ids[s + 1:s + CONTEXT + 1] for s in starts])
    manual_seed(0)
    cfg = GPTConfig(vocab_size=len(chars), context=CONTEXT, num_layers=2, d_model=64,
                    num_heads=4, dropout=0.0)
    steps = 300
    hist = fit(GPT(cfg), x, y, loss="cross_entropy", epochs=100, batch_size=32, max_steps=steps,
               optimizer=Adam(lr=WarmupLR(CosineLR(3e-3, total_steps=steps), 20)),
               clip_grad_norm=1.0, progress=False, backend="onnxruntime")
    final = hist["loss"][-1]
    # unigram entropy of this text is about 3.3 nats; context must take the model well below
    assert final < unigram - 1.0, (final, unigram)
