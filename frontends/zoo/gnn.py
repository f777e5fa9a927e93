"""Graph convolutional networks (book, "The missing bits"; Kipf and Welling 2017).

A graph of N nodes is given by node features X (N, F) and the normalised adjacency matrix
``A_hat = D^-1/2 (A + I) D^-1/2`` (N, N), computed once in the data pipeline with
:func:`normalize_adjacency`. A graph convolution is ``H' = A_hat (H W) + b``: every node mixes
its neighbours' transformed features. The number of nodes is the symbolic dim ``N``; a batch of
graphs is one block-diagonal graph.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .. import init
from ..layers import Dropout, ModuleList, ReLU
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import Sampler, ZooEntry

__lbdl_user_code__ = True

__all__ = ["GCN", "ZOO_ENTRIES", "GCNConfig", "GraphConv", "normalize_adjacency"]


def normalize_adjacency(adj: np.ndarray, self_loops: bool = True) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2`` of a (N, N) 0/1 (or weighted) adjacency matrix, float32."""
    a = np.asarray(adj, dtype=np.float64)
    if self_loops:
        a = a + np.eye(a.shape[0])
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return (inv[:, None] * a * inv[None, :]).astype(np.float32)


class GraphConv(Module):
    """``adj @ (x @ weight) + bias`` with weight (in, out) Glorot-initialised, bias zero."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.zeros((in_features, out_features), dtype=np.float32))
        bound = math.sqrt(6.0 / (in_features + out_features))
        init.uniform_(self.weight, -bound, bound)
        if bias:
            self.bias = Parameter(np.zeros(out_features, dtype=np.float32))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        """Propagate node features (N, in) over the normalised adjacency (N, N)."""
        h = adj @ (x @ self.weight)
        return h if self.bias is None else h + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


@dataclass(frozen=True)
class GCNConfig:
    """Feature, hidden and class widths (defaults: Kipf and Welling's Cora model)."""

    in_features: int = 1433
    hidden: tuple[int, ...] = (16,)
    num_classes: int = 7
    dropout: float = 0.5


class GCN(Module):
    """``forward(x, adj)``: node features (N, F) and A_hat (N, N) -> node logits (N, C)."""

    def __init__(self, config: GCNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GCNConfig()
        sizes = (c.in_features, *c.hidden, c.num_classes)
        self.layers = ModuleList(GraphConv(a, b) for a, b in itertools.pairwise(sizes))
        self.act = ReLU()
        self.dropout = Dropout(c.dropout)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        """Graph convolutions with ReLU and dropout between them."""
        for i, layer in enumerate(self.layers):
            if i:
                x = self.dropout(self.act(x))
            x = layer(x, adj)
        return x


def _graph_sampler(features: int) -> Sampler:
    """Random undirected graphs (edge probability 0.3) with sparse 0/1 features."""

    def sample(dims: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = int(dims["N"])
        upper = np.triu(rng.random((n, n)) < 0.3, 1)
        adj = normalize_adjacency(upper | upper.T)
        x = (rng.random((n, features)) < 0.05).astype(np.float32)  # sparse bag-of-words
        return {"x": x, "adj": adj}

    return sample


ZOO_ENTRIES = [
    ZooEntry(
        name="gnn",
        config=GCNConfig(),
        build=GCN,
        inputs={"x": InputSpec(("N", 1433)), "adj": InputSpec(("N", "N"))},
        outputs={"output": ("N", 7)},
        description="2-layer GCN 1433-16-7 (Kipf and Welling's Cora model), dropout 0.5",
        task="node classification on a graph",
        sampler=_graph_sampler(1433),
    ),
    ZooEntry(
        name="gnn_tiny",
        config=GCNConfig(in_features=8, hidden=(16, 16), num_classes=3, dropout=0.0),
        build=GCN,
        inputs={"x": InputSpec(("N", 8)), "adj": InputSpec(("N", "N"))},
        outputs={"output": ("N", 3)},
        description="3-layer GCN 8-16-16-3",
        task="node classification on a graph",
        sampler=_graph_sampler(8),
    ),
]
