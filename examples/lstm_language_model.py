"""Recurrent language models (book, "The missing bits"): a character LSTM (or GRU) on Python
source code.

The corpus is the source of ``json.decoder``, ``json.encoder`` and ``textwrap`` from the
standard library (about 48 KB; the last 10% held out), as in ``generate_text.py``. The zoo's
``RecurrentLM`` (character embedding 32, one LSTM layer of 128 units unrolled over 32 steps,
a linear head) is trained on next-character prediction with a compiled training step (Adam,
warmup + cosine decay, gradient clipping): backpropagation through time is the autodiff of
the unrolled graph. The held-out cross-entropy is compared with add-one smoothed unigram and
bigram models; then the model samples text from ``"def "`` at temperature 0.7 through the
exported ONNX model (the unrolled graph has a static length, so each window is right-padded:
the recurrence is causal, later positions do not change earlier logits). ONNX Runtime is
checked against NumPy on held-out windows. ``--cell gru`` or ``--cell rnn`` swaps the cell.

    python examples/lstm_language_model.py        # 1000 steps of 32 windows (about 20 s)
"""

from __future__ import annotations

import inspect
import json.decoder
import json.encoder
import textwrap

import numpy as np
from _common import check_onnx, parse_args, stage

from lbdl_graph.backends.onnx import OrtRunner
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import RecurrentLM, RNNLMConfig
from lbdl_graph.passes.optim import Adam, CosineLR, WarmupLR

T = 32


def windows(ids: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-character targets (n, T) of windows starting every ``stride``."""
    starts = np.arange(0, len(ids) - T - 1, stride)
    return (np.stack([ids[s:s + T] for s in starts]),
            np.stack([ids[s + 1:s + T + 1] for s in starts]))


def ngram_entropies(train: np.ndarray, val: np.ndarray, vocab: int) -> tuple[float, float]:
    """Held-out cross-entropy (nats/char) of add-one smoothed unigram and bigram models."""
    uni = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
    pairs = np.ones((vocab, vocab))
    np.add.at(pairs, (train[:-1], train[1:]), 1.0)
    bi = pairs / pairs.sum(1, keepdims=True)
    return float(-np.log(uni[val]).mean()), float(-np.log(bi[val[:-1], val[1:]]).mean())


def sample(runner: OrtRunner, prompt: list[int], n: int, temperature: float,
           rng: np.random.Generator) -> list[int]:
    """Extend ``prompt`` by ``n`` ids; each window is right-padded to the static length T."""
    ids = list(prompt)
    for _ in range(n):
        window = ids[-T:]
        padded = np.zeros((1, T), np.int64)
        padded[0, :len(window)] = window
        logits = runner.run({"idx": padded})["output"][0, len(window) - 1].astype(np.float64)
        p = np.exp((logits - logits.max()) / temperature)
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return ids


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 1000, "training steps"),
                                      "cell": (str, "lstm", "lstm, gru or rnn")})
    steps = 3 if args.quick else args.steps
    text = "".join(inspect.getsource(m) for m in (json.decoder, json.encoder, textwrap))
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], np.int64)
    split = int(0.9 * len(ids))
    (x, y), (xv, yv) = windows(ids[:split], 1), windows(ids[split:], T)
    unigram, bigram = ngram_entropies(ids[:split], ids[split:], len(chars))
    print(f"corpus: {len(text):,} characters, {len(chars)} distinct; {len(x):,} training "
          f"windows, {len(xv)} held-out windows of {T}")

    manual_seed(args.seed)
    model = RecurrentLM(RNNLMConfig(vocab_size=len(chars), embed_dim=32, hidden_size=128,
                                    cell=args.cell))
    with stage(f"training a {args.cell.upper()} on {args.backend}: {steps} steps of 32 windows,"
               f" unrolled over {T} steps, {model.num_parameters():,} parameters"):
        hist = fit(model, x, y, loss="cross_entropy", epochs=1, batch_size=32, max_steps=steps,
                   validation_data=(xv, yv), clip_grad_norm=1.0, backend=args.backend,
                   optimizer=Adam(WarmupLR(CosineLR(1e-2, steps), min(20, steps))),
                   seed=args.seed, progress=False)
    print(f"held-out cross-entropy (nats/char): uniform {np.log(len(chars)):.3f}, unigram "
          f"{unigram:.3f}, bigram {bigram:.3f}, {args.cell.upper()} {hist['val_loss'][-1]:.3f}"
          f" ({hist['val_loss'][-1] / np.log(2):.2f} bits/char)")

    graph = trace(model, {"idx": InputSpec(("N", T), "int64")}, training=False)
    check_onnx(graph, {"idx": xv[:16]}, args.out, "lstm_language_model")
    runner = OrtRunner(args.out / "lstm_language_model.onnx")
    rng = np.random.default_rng(args.seed)
    out = sample(runner, [chars.index(c) for c in "def "], 40 if args.quick else 300, 0.7, rng)
    print(f"--- {args.cell.upper()} sample at temperature 0.7:\n{''.join(chars[i] for i in out)}"
          "\n---")


if __name__ == "__main__":
    main()
