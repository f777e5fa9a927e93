"""Shared helpers of the zoo tests: tracing an entry once, feeding it, running it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.graph import Graph


@functools.cache
def traced(name: str, training: bool = False) -> tuple[Any, Graph]:
    """A fresh model of entry ``name`` (seeded) and its graph, built once per session."""
    from lbdl_graph.frontends import manual_seed

    manual_seed(0)
    entry = ZOO[name]
    model = entry.model()
    return model, entry.trace(model, training=training)


def feeds(name: str, dims: Mapping[str, int] | None = None, seed: int = 0,
          key: tuple[int, int] | None = None, graph: Graph | None = None) -> dict[str, Any]:
    """Example inputs of entry ``name`` (plus an ``rng_key`` when the graph takes one)."""
    out: dict[str, Any] = ZOO[name].example_inputs(dims, seed)
    if graph is not None and "rng_input" in graph.metadata:
        out[graph.metadata["rng_input"]] = np.asarray(key or (1, 0), dtype=np.int64)
    return out


def run_entry(name: str, inputs: Mapping[str, Any], training: bool = False
              ) -> dict[str, np.ndarray]:
    """Run entry ``name``'s cached graph on ``inputs``."""
    _, g = traced(name, training)
    return run(g, dict(inputs), training=training)
