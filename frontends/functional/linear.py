"""Linear maps and lookups: linear, embedding, one_hot."""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import DTypeError, ShapeError

from ..tensor import Tensor, as_tensor, error
from ._util import float_tensor

__all__ = ["embedding", "linear", "one_hot"]


def linear(x: Any, weight: Any, bias: Any | None = None) -> Tensor:
    """``x @ weight.T + bias`` with PyTorch's (out_features, in_features) weight layout."""
    t = float_tensor(x, "linear")
    w = as_tensor(weight)
    if w.ndim != 2:
        raise error(ShapeError, f"linear: weight must be (out_features, in_features), got {w.type}")
    if t.ndim == 0 or (isinstance(t.shape[-1], int) and t.shape[-1] != w.shape[1]):
        raise error(ShapeError, f"linear: input {t.type} does not end in in_features="
                    f"{w.shape[1]} of weight {w.type}")
    y = t @ w.T
    return y if bias is None else y + as_tensor(bias)


def embedding(indices: Any, weight: Any, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) at integer ``indices``; the result has shape
    ``indices.shape + (dim,)``. ``padding_idx`` only matters for initialisation and training."""
    idx = as_tensor(indices) if not isinstance(indices, Tensor) else indices
    if not idx.dtype.is_integer:
        raise error(DTypeError, f"embedding indices must be integers, got {idx.type}",
                    hint="convert token ids with .long()")
    w = as_tensor(weight)
    if w.ndim != 2:
        raise error(ShapeError, f"embedding: weight must be (num_embeddings, dim), got {w.type}")
    return Tensor(ops.gather(w.value, idx.value, axis=0))


def one_hot(indices: Any, num_classes: int) -> Tensor:
    """int64 one-hot encoding with a trailing dim of ``num_classes`` (which must be given: the
    graph cannot read it from the data)."""
    idx = as_tensor(indices) if not isinstance(indices, Tensor) else indices
    if not idx.dtype.is_integer:
        raise error(DTypeError, f"one_hot indices must be integers, got {idx.type}")
    if num_classes is None or int(num_classes) <= 0:
        raise error(ShapeError, f"one_hot needs a positive num_classes, got {num_classes}")
    classes = as_tensor(np.arange(int(num_classes), dtype=idx.dtype.numpy))
    return (idx.unsqueeze(-1) == classes).to("int64")
