"""Helpers of the pass tests: parse Before text, run a pass, compare with Expected text and
check that the NumPy results agree and that a second run changes nothing."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from lbdl_graph import Graph, parse_graph, print_graph, verify
from lbdl_graph.backends.numpy import run
from lbdl_graph.passes.base import PassResult
from lbdl_graph.passes.manager import random_inputs


def graph_of(text: str, seed: int = 0, positive: Iterable[str] = ()) -> Graph:
    """Parse a printed graph and give its parameters random data (> 0 for ``positive``)."""
    g = parse_graph(textwrap.dedent(text))
    rng = np.random.default_rng(seed)
    data = {p.name: rng.standard_normal(p.data.shape) + 0.5 for p in g.params}
    data.update((name, np.abs(data[name]) + 0.1) for name in positive)
    return g.with_params({p.name: data[p.name].astype(p.data.dtype) for p in g.params})


def assert_same_outputs(before: Graph, after: Graph, *, inputs: Mapping[str, np.ndarray]
                        | None = None, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Both graphs give the same named outputs on random inputs (NumPy interpreter)."""
    feeds = dict(inputs) if inputs is not None else random_inputs(before, seed=1)
    want, got = run(before, feeds), run(after, feeds)
    assert list(got) == list(want)
    for name, w in want.items():
        assert got[name].dtype == w.dtype, name
        np.testing.assert_allclose(got[name].astype(np.float64), w.astype(np.float64),
                                   rtol=rtol, atol=atol, err_msg=name)


def check_pass(p: Callable[[Graph], PassResult], before: str, expected: str, *,
               stats: Mapping[str, int] | None = None, rtol: float = 1e-5,
               atol: float = 1e-6, positive: Iterable[str] = ()) -> PassResult:
    """Golden test of one pass: Expected text, verifier, same results and idempotence."""
    g = graph_of(before, positive=positive)
    r = p(g)
    assert print_graph(r.graph) == textwrap.dedent(expected).lstrip("\n")
    assert r.changed is True
    if stats is not None:
        assert dict(r.stats) == dict(stats)
    verify(r.graph)
    assert_same_outputs(g, r.graph, rtol=rtol, atol=atol)
    again = p(r.graph)
    assert again.changed is False
    assert again.graph is r.graph
    return r


def check_unchanged(p: Callable[[Graph], PassResult], text: str) -> None:
    """The pass leaves the graph alone: same object, changed False."""
    g = graph_of(text)
    r = p(g)
    assert r.changed is False
    assert r.graph is g
