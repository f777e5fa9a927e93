"""The zoo's TextEmbedder: unit-norm outputs, padding ignored, NumPy pooling reproduced."""

from __future__ import annotations

import numpy as np

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.zoo import EmbedderConfig, TextEmbedder


def _graph() -> tuple[TextEmbedder, object]:
    manual_seed(0)
    m = TextEmbedder(EmbedderConfig(vocab_size=20, d_model=8, hidden=16, out_dim=6))
    return m, trace(m, {"ids": InputSpec(("N", "T"), "int64")}, training=False)


def test_embeddings_are_unit_vectors_and_ignore_padding() -> None:
    _, g = _graph()
    ids = np.array([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0]])
    out = run(g, {"ids": ids})["output"]
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    short = run(g, {"ids": ids[:, :3]})["output"]
    np.testing.assert_allclose(out, short, atol=1e-6)


def test_pooling_matches_numpy() -> None:
    m, g = _graph()
    sd = {k: np.asarray(v) for k, v in m.state_dict().items()}
    ids = np.array([[1, 2, 3, 0], [4, 4, 0, 0]])
    emb = sd["tok.weight"][ids]
    mask = (ids != 0)[..., None]
    pooled = (emb * mask).sum(1) / mask.sum(1)
    h = np.tanh(pooled @ sd["fc1.weight"].T + sd["fc1.bias"]) @ sd["fc2.weight"].T + sd["fc2.bias"]
    want = h / np.linalg.norm(h, axis=1, keepdims=True)
    np.testing.assert_allclose(run(g, {"ids": ids})["output"], want, atol=1e-5)
