"""``examples/rag.py``'s reader data and loss: no held-out fact reaches training, targets
are the next words, the right passage mostly comes first, and the answer weighs
ANSWER_WEIGHT times more in the loss (checked against NumPy)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import trace


@pytest.fixture(scope="module")
def rag(import_example: Callable[[str], ModuleType]) -> ModuleType:
    return import_example("rag")


def test_reader_data_reads_passages_and_never_shows_held_out_facts(rag: ModuleType) -> None:
    c = rag.make_corpus(np.random.default_rng(0))
    x, y, a = rag.reader_data(c, np.random.default_rng(1), 400)
    stoi, itos = c.stoi, c.itos
    held = {c.facts[i] for i in c.held}
    question_of = {q: c.facts[i][:2] for i, q in enumerate(c.questions)}
    first = two = 0
    for k in range(len(x)):
        n = int(a[k]) + 2  # prompt, answer, <eos>
        assert (y[k, :n - 1] == x[k, 1:n]).all() and y[k, n - 1] == stoi[rag.EOS]
        assert not y[k, n:].any() and not x[k, n:].any()
        words = [itos[t] for t in x[k, 1:a[k] + 1]]
        q = words.index("question")
        e, r = question_of[" ".join(words[q + 2:-2])]
        answer = itos[y[k, a[k]]]
        assert answer in c.values[r] and (e, r, answer) not in held
        right = rag.RELATIONS[r][0].format(e=e, v=answer)
        context = " ".join(words[:q])
        assert right in context
        if context != right:
            two += 1
            first += context.startswith(right)
    assert 0.6 < first / two < 0.9 and two > 0.6 * len(x)


def test_token_loss_weighs_the_answer(rag: ModuleType) -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 7)).astype(np.float32)
    y = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 1, 0], [2, 2, 0, 0, 0]], np.int64)
    y[[0, 1, 2], [2, 2, 1]] += 7  # the answers
    g = trace(rag.token_loss, {"out": logits, "y": y})
    got = float(run(g, {"out": logits, "y": y})["output"])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = y % 7
    w = (target != 0) * np.where(y >= 7, rag.ANSWER_WEIGHT, 1.0)
    picked = np.take_along_axis(logp, target[..., None], -1)[..., 0]
    assert got == pytest.approx(-(picked * w).sum() / w.sum(), rel=1e-5)
    assert rag.ANSWER_WEIGHT > 1
