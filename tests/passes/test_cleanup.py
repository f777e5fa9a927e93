"""Dead-code and common-subexpression elimination."""

from __future__ import annotations

import numpy as np

from lbdl_graph.passes.eliminate_common_subexpressions import (
    attr_key,
    eliminate_common_subexpressions,
)
from lbdl_graph.passes.eliminate_dead_code import eliminate_dead_code
from tests.passes.util import check_pass, check_unchanged, graph_of


def test_dead_code_removes_unused_nodes_and_params() -> None:
    check_pass(eliminate_dead_code, """
    graph g(%x: f32[3], %unused: f32[2]):
      param %w: f32[3]
      param %dead: f32[3]
      %0: f32[3] = mul(%dead, %dead)
      %1: f32[3] = add(%x, %w)
      %2: f32[3] = exp(%0)
      return %1
    """, """
    graph g(%x: f32[3], %unused: f32[2]):
      param %w: f32[3]
      %0: f32[3] = add(%x, %w)
      return %0
    """, stats={"dead_nodes": 2, "dead_params": 1})


def test_dead_code_keeps_a_live_graph() -> None:
    check_unchanged(eliminate_dead_code, """
    graph g(%x: f32[3]):
      param %w: f32[3]
      %0: f32[3] = add(%x, %w)
      return %0, %w
    """)


def test_cse_merges_equal_nodes_and_cascades() -> None:
    check_pass(eliminate_common_subexpressions, """
    graph g(%x: f32[3]):
      %0: f32[] = constant[value=tensor(f32[], 2.0)]()
      %1: f32[] = constant[value=tensor(f32[], 2.0)]()
      %2: f32[3] = mul(%x, %0)
      %3: f32[3] = mul(%x, %1)
      %4: f32[3] = exp(%2)
      %5: f32[3] = exp(%3)
      %6: f32[3] = add(%4, %5)
      return %6
    """, """
    graph g(%x: f32[3]):
      %0: f32[] = constant[value=tensor(f32[], 2.0)]()
      %1: f32[3] = mul(%x, %0)
      %2: f32[3] = exp(%1)
      %3: f32[3] = add(%2, %2)
      return %3
    """, stats={"merged": 3})


def test_cse_keeps_output_names_through_identities() -> None:
    check_pass(eliminate_common_subexpressions, """
    graph g(%x: f32[3]):
      %0: f32[3] = exp(%x)
      %1: f32[3] = exp(%x)
      return %0, %1
    """, """
    graph g(%x: f32[3]):
      %0: f32[3] = exp(%x)
      %1: f32[3] = identity(%0)
      return %0, %1
    """, stats={"merged": 1})


def test_cse_compares_attributes_by_value() -> None:
    check_unchanged(eliminate_common_subexpressions, """
    graph g(%x: f32[2,3]):
      %0: f32[3,2] = transpose[perm=(1, 0)](%x)
      %1: f32[2,3] = transpose[perm=(0, 1)](%x)
      %2: f32[] = constant[value=tensor(f32[], 0.0)]()
      %3: f32[] = constant[value=tensor(f32[], -0.0)]()
      return %0, %1, %2, %3
    """)
    assert attr_key(np.array([1.0, 2.0])) == attr_key(np.array([1.0, 2.0]))
    assert attr_key(np.array([1.0, 2.0])) != attr_key(np.array([1.0, 2.0], np.float32))
    assert attr_key(0.0) != attr_key(-0.0)
    assert attr_key(float("nan")) == attr_key(float("nan"))
    assert attr_key((1, (2.0,))) == attr_key((1, (2.0,)))


def test_cse_merges_identical_random_ops() -> None:
    g = graph_of("""
    graph g(%x: f32[4], %key: i64[2]):
      %0: f32[4] = dropout[ratio=0.5, salt=3](%x, %key)
      %1: f32[4] = dropout[ratio=0.5, salt=3](%x, %key)
      %2: f32[4] = dropout[ratio=0.5, salt=4](%x, %key)
      %3: f32[4] = add(%0, %1)
      %4: f32[4] = add(%3, %2)
      return %4
    """)
    r = eliminate_common_subexpressions(g)
    assert r.stats == {"merged": 1}
    assert r.graph.op_counts()["dropout"] == 2
