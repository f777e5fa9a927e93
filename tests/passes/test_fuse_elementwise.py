"""Elementwise-chain fusion -> fused_elementwise, and memory planning hints."""

from __future__ import annotations

import itertools

from lbdl_graph import parse_graph, print_graph
from lbdl_graph.passes.fuse_elementwise import fuse_elementwise
from lbdl_graph.passes.plan_memory import plan_memory
from tests.passes.util import check_pass, check_unchanged, graph_of

CHAIN = """
graph g(%x: f32[N,4], %y: f32[4]):
  %0: f32[N,4] = mul(%x, %y)
  %1: f32[] = constant[value=tensor(f32[], 0.5)]()
  %2: f32[N,4] = add(%0, %1)
  %3: f32[N,4] = tanh(%2)
  %4: f32[N,4] = softmax[axis=-1](%3)
  %5: f32[N,4] = exp(%4)
  %6: f32[N,4] = neg(%5)
  %7: f32[N,4] = mul(%6, %4)
  return %7
"""


def test_two_chains_around_a_softmax() -> None:
    r = check_pass(fuse_elementwise, CHAIN, """
    graph g(%x: f32[N,4], %y: f32[4]):
      %0: f32[N,4] = fused_elementwise[program=(('mul', (0, 1), ()), ('constant', (), (('value', tensor(f32[], 0.5)),)), ('add', (2, 3), ()), ('tanh', (4,), ()))](%x, %y)
      %1: f32[N,4] = softmax[axis=-1](%0)
      %2: f32[N,4] = fused_elementwise[program=(('exp', (0,), ()), ('neg', (1,), ()), ('mul', (2, 0), ()))](%1)
      return %2
    """, stats={"elementwise_chain": 2, "fused_ops": 6})  # noqa: E501
    assert parse_graph(print_graph(r.graph)).op_counts() == r.graph.op_counts()  # round trip


def test_shared_values_and_outputs_stop_a_chain() -> None:
    g = graph_of("""
    graph g(%x: f32[4]):
      %0: f32[4] = exp(%x)
      %1: f32[4] = neg(%0)
      %2: f32[4] = sin(%1)
      %3: f32[4] = cos(%1)
      %4: f32[4] = add(%2, %3)
      return %4, %0
    """)
    r = fuse_elementwise(g)
    # %0 is an output: exp stays; neg feeds two users inside the group: all of it fuses
    assert r.graph.op_counts() == {"exp": 1, "fused_elementwise": 1}
    assert r.stats == {"elementwise_chain": 1, "fused_ops": 4}


def test_fused_nodes_merge_with_neighbours_and_single_ops_stay() -> None:
    check_unchanged(fuse_elementwise, """
    graph g(%x: f32[4]):
      %0: f32[4] = exp(%x)
      %1: f32[4] = softmax[axis=0](%0)
      return %1
    """)
    g = fuse_elementwise(graph_of(CHAIN)).graph
    assert fuse_elementwise(g).changed is False


def test_memory_plan_shares_buffers_only_between_disjoint_lifetimes() -> None:
    g = graph_of(CHAIN)
    r = plan_memory(g)
    plan = r.graph.metadata["memory_plan"]
    assert r.changed and r.graph.nodes == g.nodes
    assert plan_memory(r.graph).changed is False
    buffers = plan["buffers"]
    assert "7" not in buffers and len(buffers) == plan["values"] == 7  # outputs never share
    assert plan["num_buffers"] < plan["values"]
    born = {v.name: i for i, n in enumerate(g.nodes) for v in n.outputs}
    dies = {v.name: i for i, n in enumerate(g.nodes) for v in n.inputs if v is not None}
    owners: dict[int, list[str]] = {}
    for name, buf in buffers.items():
        owners.setdefault(buf, []).append(name)
    for names in owners.values():
        spans = sorted((born[n], dies.get(n, born[n]), n) for n in names)
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            handoff = start == end and plan["in_place"].get(g.nodes[start].name) is not None
            assert start > end or handoff, f"{a} and {b} are alive together"
    # add(%0, %1) reads mul's result for the last time: it may write in place
    assert plan["in_place"]["add"] == 0 and buffers["2"] == buffers["0"]
