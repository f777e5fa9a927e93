"""Embeddings and positional encodings (book sections 4.9 and 4.10)."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import DTypeError, ShapeError
from lbdl_graph.frontends import InputSpec, Module, nn, trace

from .helpers import rand, run_model


def _line(marker: str) -> int:
    with open(__file__) as f:
        for i, text in enumerate(f, 1):
            if marker in text and "_line(" not in text:
                return i
    raise AssertionError(marker)


def test_embedding_lookup():
    emb = nn.Embedding(10, 3)
    idx = np.array([[1, 9, 0], [4, 4, 2]], dtype=np.int64)
    out = run_model(emb, idx)
    np.testing.assert_array_equal(out, emb.weight.data[idx])
    g = trace(emb, [InputSpec(("B", "T"), "int64")])
    assert g.outputs[0].type.shape == ("B", "T", 3)


def test_float_indices_into_embedding_raise_at_the_users_line():
    class Net(Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(10, 4)

        def forward(self, x):
            return self.tok(x)  # float-index-line

    with pytest.raises(DTypeError) as info:
        trace(Net(), [(2, 3)])
    err = info.value
    assert err.node == "tok"
    assert err.source.file == __file__ and err.source.line == _line("# float-index-line")
    assert "integers" in str(err) and "f32[2,3]" in str(err)


def _book_encoding(t_len, dim, base=10_000.0):
    pe = np.zeros((t_len, dim))
    for t in range(t_len):
        for d in range(dim):
            if d % 2 == 0:
                pe[t, d] = np.sin(t / base ** (d / dim))
            else:
                pe[t, d] = np.cos(t / base ** ((d - 1) / dim))
    return pe.astype(np.float32)


def test_sinusoidal_encoding_static_and_symbolic_lengths_follow_the_book():
    enc = nn.SinusoidalPositionalEncoding(6)
    x = rand(2, 5, 6)
    np.testing.assert_allclose(run_model(enc, x), x + _book_encoding(5, 6), rtol=1e-5, atol=1e-5)
    g = trace(enc, [("N", "T", 6)])
    assert g.outputs[0].type.shape == ("N", "T", 6)
    for t in (3, 9):
        y = rand(2, t, 6)
        np.testing.assert_allclose(run(g, {"x": y})["output"], y + _book_encoding(t, 6),
                                   rtol=1e-5, atol=1e-5)
    seq_first = nn.SinusoidalPositionalEncoding(6, batch_first=False)
    z = rand(5, 2, 6)
    np.testing.assert_allclose(run_model(seq_first, z), z + _book_encoding(5, 6)[:, None],
                               rtol=1e-5, atol=1e-5)


def test_learned_positional_encoding():
    enc = nn.LearnedPositionalEncoding(8, 3)
    x = rand(2, 5, 3)
    np.testing.assert_allclose(run_model(enc, x), x + enc.weight.data[:5], rtol=1e-6)
    g = trace(enc, [("N", "T", 3)])
    y = rand(1, 7, 3)
    np.testing.assert_allclose(run(g, {"x": y})["output"], y + enc.weight.data[:7], rtol=1e-6)
    with pytest.raises(ShapeError, match="max_len=8"):
        trace(enc, [(1, 9, 3)])
    assert [n for n, _ in enc.named_parameters()] == ["weight"]
