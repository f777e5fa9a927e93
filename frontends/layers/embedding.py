"""Token embeddings and positional encodings (book sections 4.9 and 4.10)."""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ShapeError

from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, as_tensor, error
from ._util import check_int, check_prob, layer_error
from .kv_cache import active_cache

__all__ = ["Embedding", "LearnedPositionalEncoding", "SinusoidalPositionalEncoding",
           "sinusoidal_table"]


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors, initialised N(0, 1) as in PyTorch (the
    ``padding_idx`` row is zero)."""

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings = check_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise layer_error("Embedding", f"padding_idx {padding_idx} is out of range for "
                                  f"{self.num_embeddings} embeddings")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(init.empty(self.num_embeddings, self.embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh weights from the global generator."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0.0

    def forward(self, indices: Tensor) -> Tensor:
        """Look up integer ``indices``: the result has shape ``indices.shape + (dim,)``."""
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


def sinusoidal_table(length: int, dim: int, base: float = 10_000.0) -> np.ndarray:
    """The book's encoding: ``sin(t / base^(d/D))`` for even d, ``cos(t / base^((d-1)/D))``
    for odd d; shape (length, dim), float32."""
    t = np.arange(length, dtype=np.float64)[:, None]
    d = np.arange(dim)
    angle = t / np.power(base, (d - d % 2) / dim)
    return np.where(d % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


def _seq_axis(x: Tensor, batch_first: bool, layer: str) -> int:
    if x.ndim != 3:
        raise error(ShapeError, f"{layer} expects (N, T, D) or (T, N, D) input, got {x.type}")
    return 1 if batch_first else 0


class SinusoidalPositionalEncoding(Module):
    """Adds the book's sinusoidal positional encoding to (N, T, D) inputs (``batch_first``) or
    (T, N, D). A static T uses a constant table; a symbolic T computes it in the graph from
    ``iota_like``, so one graph serves every sequence length."""

    def __init__(self, d_model: int, base: float = 10_000.0, dropout: float = 0.0,
                 batch_first: bool = True) -> None:
        super().__init__()
        self.d_model = check_int(type(self).__name__, "d_model", d_model)
        if base <= 1.0:
            raise layer_error(type(self).__name__, f"base must be > 1, got {base}")
        self.base = float(base)
        self.p = check_prob(type(self).__name__, "dropout", dropout)
        self.batch_first = bool(batch_first)

    def encoding(self, x: Tensor) -> Tensor:
        """The encoding broadcastable against ``x``: (T, D) or, batch second, (T, 1, D)."""
        axis = _seq_axis(x, self.batch_first, type(self).__name__)
        if x.shape[2] != self.d_model:
            raise error(ShapeError, f"{type(self).__name__}: input {x.type} does not end in "
                        f"d_model={self.d_model}")
        n = x.shape[axis]
        cache = active_cache()
        if cache is not None and self.batch_first:  # generation: (N, T, D) after the past
            pos = cache.positions(n).to(x.dtype).unsqueeze(2)
        elif isinstance(n, int):
            pe = as_tensor(sinusoidal_table(n, self.d_model, self.base), x.dtype)
            return pe if self.batch_first else pe.unsqueeze(1)
        else:  # one (T, D) slice of x gives the shape to number positions from
            plane = x[0] if self.batch_first else x[:, 0]
            pos = Tensor(ops.iota_like(plane.value, axis=0)).to(x.dtype)
        d = np.arange(self.d_model)
        inv_freq = as_tensor(np.power(self.base, -(d - d % 2) / self.d_model), x.dtype)
        phase = as_tensor(np.where(d % 2 == 0, 0.0, np.pi / 2), x.dtype)
        pe = (pos * inv_freq + phase).sin()
        return pe if self.batch_first else pe.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        """``x + encoding`` (then dropout in training mode)."""
        t = as_tensor(x)
        return F.dropout(t + self.encoding(t), self.p, self.training)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}"


class LearnedPositionalEncoding(Module):
    """Adds a trained vector per position (``weight``: (max_len, d_model), N(0, 1) like an
    Embedding) to (N, T, D) inputs (``batch_first``) or (T, N, D)."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0,
                 batch_first: bool = True) -> None:
        super().__init__()
        self.max_len = check_int(type(self).__name__, "max_len", max_len)
        self.d_model = check_int(type(self).__name__, "d_model", d_model)
        self.p = check_prob(type(self).__name__, "dropout", dropout)
        self.batch_first = bool(batch_first)
        self.weight = Parameter(init.empty(self.max_len, self.d_model))
        init.normal_(self.weight)

    def encoding(self, x: Tensor) -> Tensor:
        """The first T rows of ``weight``: (T, D), or (T, 1, D) batch second."""
        axis = _seq_axis(x, self.batch_first, type(self).__name__)
        n = x.shape[axis]
        cache = active_cache()
        if cache is not None:  # generation: positions after the past, as the cache counts them
            if not self.batch_first:
                raise error(ShapeError, f"{type(self).__name__}: a KV cache needs batch_first")
            return F.embedding(cache.positions(n), self.weight)
        if isinstance(n, int):
            if n > self.max_len:
                raise error(ShapeError, f"{type(self).__name__}: sequence length {n} exceeds "
                            f"max_len={self.max_len}")
            pe = self.weight[:n]
        else:
            plane = x[0, :, 0] if self.batch_first else x[:, 0, 0]
            pe = F.embedding(Tensor(ops.iota_like(plane.value, axis=0)), self.weight)
        return pe if self.batch_first else pe.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        """``x + encoding`` (then dropout in training mode)."""
        t = as_tensor(x)
        return F.dropout(t + self.encoding(t), self.p, self.training)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"
