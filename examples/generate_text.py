"""Autoregressive text generation (book section 7.1): a character GPT on Python source code.

The corpus is the source of three standard-library modules (``json.decoder``,
``json.encoder``, ``textwrap``): about 48 KB of real Python, read with ``inspect``; the last
10% is held out. The zoo's ``GPT`` (2 pre-LN causal blocks, d=64, 4 heads, context 32) is
trained on next-character prediction with a compiled training step (Adam, warmup + cosine
decay, gradient clipping). The held-out cross-entropy (nats per character) is compared with a
unigram and a bigram model fitted on the training text. Then the model writes with
:func:`~lbdl_graph.frontends.generation.generate` from an exported generation bundle
(prefill + decode graphs with a KV cache, on ONNX Runtime): greedy decoding is first checked
token for token against recomputing the whole window at every step (NumPy), then, starting from
``"def "``, it samples at two temperatures (seeded); for each we print the text and the share
of its identifiers that occur in the corpus (also measured for unigram samples). ONNX Runtime
is checked against NumPy on held-out windows.

    python examples/generate_text.py              # 1000 steps of 32 windows (about 15 s)
"""

from __future__ import annotations

import inspect
import json.decoder
import json.encoder
import re
import textwrap

import numpy as np
from _common import check_onnx, parse_args, stage

from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.generation import RecomputeRunner, generate, trace_recompute
from lbdl_graph.frontends.generation.bundle import export_generation, load_generation
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import GPT, GPTConfig
from lbdl_graph.passes.optim import Adam, CosineLR, WarmupLR

CONTEXT = 32
IDENT = re.compile(r"[A-Za-z_]{3,}")


def entropy_baselines(train: np.ndarray, val: np.ndarray, vocab: int) -> tuple[float, float]:
    """Held-out cross-entropy (nats/char) of add-one smoothed unigram and bigram models."""
    uni = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
    pairs = np.ones((vocab, vocab))
    np.add.at(pairs, (train[:-1], train[1:]), 1.0)
    bi = pairs / pairs.sum(1, keepdims=True)
    return float(-np.log(uni[val]).mean()), float(-np.log(bi[val[:-1], val[1:]]).mean())


def known_share(text: str, words: set[str]) -> float:
    """Share of the identifiers (3+ letters) of ``text`` that occur in the corpus."""
    found = IDENT.findall(text)
    return sum(w in words for w in found) / max(len(found), 1)


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 1000, "training steps")})
    steps = 4 if args.quick else args.steps
    text = "".join(inspect.getsource(m) for m in (json.decoder, json.encoder, textwrap))
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], np.int64)
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:]
    starts = np.arange(len(train) - CONTEXT - 1)
    x = np.stack([train[s:s + CONTEXT] for s in starts])
    y = np.stack([train[s + 1:s + CONTEXT + 1] for s in starts])
    vs = np.arange(0, len(val) - CONTEXT - 1, CONTEXT)
    xv = np.stack([val[s:s + CONTEXT] for s in vs])
    yv = np.stack([val[s + 1:s + CONTEXT + 1] for s in vs])
    unigram, bigram = entropy_baselines(train, val, len(chars))
    print(f"corpus: {len(text):,} characters of standard-library source, {len(chars)} distinct;"
          f" {len(train):,} train / {len(val):,} held out")

    manual_seed(args.seed)
    cfg = GPTConfig(vocab_size=len(chars), context=CONTEXT, num_layers=2, d_model=64,
                    num_heads=4, dropout=0.0)
    model = GPT(cfg)
    with stage(f"training on {args.backend}: {steps} steps of 32 windows of {CONTEXT}, "
               f"{model.num_parameters():,} parameters"):
        hist = fit(model, x, y, loss="cross_entropy", epochs=1, batch_size=32, max_steps=steps,
                   validation_data=(xv, yv), clip_grad_norm=1.0, backend=args.backend,
                   optimizer=Adam(WarmupLR(CosineLR(3e-3, steps), min(20, steps))),
                   seed=args.seed, progress=False)
    print(f"held-out cross-entropy (nats/char): uniform {np.log(len(chars)):.3f}, unigram "
          f"{unigram:.3f}, bigram {bigram:.3f}, GPT {hist['val_loss'][-1]:.3f}")

    graph = trace(model, {"idx": InputSpec(("N", "T"), "int64")}, training=False)
    check_onnx(graph, {"idx": xv[:16]}, args.out, "generate_text")
    export_generation(model, args.out / "generate_text_bundle")
    bundle = load_generation(args.out / "generate_text_bundle")
    rng = np.random.default_rng(args.seed)
    words = set(IDENT.findall(text[:split]))
    n = 40 if args.quick else 300
    prompt = [chars.index(c) for c in "def "]
    kv = generate(bundle.runner, prompt, CONTEXT - len(prompt))
    full = generate(RecomputeRunner(trace_recompute(model), len(chars), CONTEXT), prompt,
                    CONTEXT - len(prompt))
    print(f"greedy, {len(kv.tokens[0])} tokens: KV cache (onnxruntime, "
          f"{kv.decode_tokens_per_s:.0f} tokens/s) vs full recompute (numpy): "
          f"{'identical' if kv.tokens == full.tokens else 'DIFFERENT'}")
    if kv.tokens != full.tokens:
        raise SystemExit(1)
    uni_text = "".join(rng.choice(chars, size=n, p=np.bincount(train) / len(train)))
    print(f"unigram samples: {known_share(uni_text, words):.0%} of identifiers occur in the "
          "corpus")
    for temperature in (0.5, 1.0):
        # the context holds 32 characters: continue from the last 16, 16 at a time
        ids = list(prompt)
        while len(ids) < len(prompt) + n:
            window = ids[-(CONTEXT // 2):]
            step = min(CONTEXT - len(window), len(prompt) + n - len(ids))
            ids += generate(bundle.runner, window, step, temperature=temperature,
                            seed=args.seed + len(ids)).tokens[0]
        out = "".join(chars[i] for i in ids)
        print(f"--- GPT sample at temperature {temperature} ({known_share(out, words):.0%} of "
              f"identifiers occur in the corpus):\n{out}\n---")


if __name__ == "__main__":
    main()
