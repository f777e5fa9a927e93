"""The pattern language and the fixpoint rewrite engine."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, OpError, ops, print_graph, verify
from lbdl_graph.passes.rewrite import (
    P,
    Pat,
    RewriteError,
    Rule,
    RuleSet,
    constant_value,
    is_graph_output,
    pat,
    rewrite_to_fixpoint,
)
from lbdl_graph.source import SourceLoc
from tests.passes.util import assert_same_outputs, graph_of

x, y = P.var("x"), P.var("y")
RELU_RELU = Rule("relu_relu", pat.relu(pat.relu(x)), lambda x: ops.relu(x))
ADD_TO_SUB = Rule("add_neg_to_sub", pat.add(x, pat.neg(y)), lambda x, y: ops.sub(x, y))

CHAIN = """
graph g(%x: f32[2,3], %y: f32[2,3]):
  %0: f32[2,3] = neg(%y)
  %1: f32[2,3] = add(%0, %x)
  %2: f32[2,3] = relu(%1)
  %3: f32[2,3] = relu(%2)
  %4: f32[2,3] = exp(%x)
  return %3, %4
"""


def test_rules_fire_with_commuted_operands_and_keep_output_values() -> None:
    g = graph_of(CHAIN)
    r = rewrite_to_fixpoint(g, [RELU_RELU, ADD_TO_SUB])
    assert r.changed and dict(r.stats) == {"add_neg_to_sub": 1, "relu_relu": 1}
    assert print_graph(r.graph) == (
        "graph g(%x: f32[2,3], %y: f32[2,3]):\n"
        "  %0: f32[2,3] = sub(%x, %y)\n"
        "  %1: f32[2,3] = relu(%0)\n"
        "  %2: f32[2,3] = exp(%x)\n"
        "  return %1, %2\n")
    assert r.graph.outputs == g.outputs  # same Value objects, so the output names are kept
    assert r.graph.nodes[-1] is g.nodes[-1]  # untouched nodes are the same objects
    assert_same_outputs(g, r.graph)


def test_no_match_returns_the_same_graph() -> None:
    g = graph_of(CHAIN)
    r = rewrite_to_fixpoint(g, [Rule("never", pat.sigmoid(x), lambda x: x)])
    assert r.changed is False and r.graph is g and dict(r.stats) == {}


def test_replacement_nodes_keep_source_and_scope() -> None:
    b = GraphBuilder("g")
    xv = b.input("x", "f32", (4,))
    loc = SourceLoc("model.py", 12, "forward")
    with b, b.scope("encoder.block"):
        (h,) = b.add_node(ops.relu, [xv], {}, source=loc)
        (out,) = b.add_node(ops.relu, [h], {}, source=loc)
    g = b.build([out])
    r = rewrite_to_fixpoint(g, [RELU_RELU])
    (node,) = r.graph.nodes
    assert node.source == loc
    assert node.name.startswith("encoder.block/relu")
    assert node.outputs[0] is out


def test_replaced_graph_output_keeps_its_name_through_an_identity() -> None:
    g = graph_of("""
    graph g(%x: f32[3]):
      %0: f32[3] = neg(%x)
      %1: f32[3] = neg(%0)
      return %1
    """)
    r = rewrite_to_fixpoint(g, [Rule("neg_neg", pat.neg(pat.neg(x)), lambda x: x, shared=True)])
    assert [n.op for n in r.graph.nodes] == [ops.identity]
    assert r.graph.output_names() == g.output_names()
    assert_same_outputs(g, r.graph)


def test_repeated_variable_must_bind_the_same_value() -> None:
    two = np.float32(2)
    square = Rule("mul_self", pat.mul(x, x), lambda x: ops.pow_(x, ops.constant(value=two)))
    same = graph_of("graph g(%a: f32[2]):\n  %0: f32[2] = mul(%a, %a)\n  return %0\n")
    other = graph_of("graph g(%a: f32[2], %b: f32[2]):\n  %0: f32[2] = mul(%a, %b)\n"
                     "  return %0\n")
    assert rewrite_to_fixpoint(same, [square]).stats == {"mul_self": 1}
    assert rewrite_to_fixpoint(other, [square]).changed is False


def test_inner_nodes_with_other_users_block_a_rule_unless_shared() -> None:
    text = """
    graph g(%x: f32[3]):
      %0: f32[3] = relu(%x)
      %1: f32[3] = relu(%0)
      %2: f32[3] = add(%0, %1)
      return %2
    """
    assert rewrite_to_fixpoint(graph_of(text), [RELU_RELU]).changed is False
    shared = Rule("relu_relu", pat.relu(pat.relu(x)), lambda x: ops.relu(x), shared=True)
    r = rewrite_to_fixpoint(graph_of(text), [shared])
    assert r.stats == {"relu_relu": 1}
    assert_same_outputs(graph_of(text), r.graph)


def test_attribute_predicates_and_constants() -> None:
    g = graph_of("""
    graph g(%x: f32[2,3]):
      %0: f32[3,2] = transpose[perm=(1, 0)](%x)
      %1: f32[] = constant[value=tensor(f32[], 2.0)]()
      %2: f32[3,2] = mul(%1, %0)
      return %2
    """)
    seen = []

    def double(x: object, c: object) -> None:
        seen.append(float(constant_value(c)))  # type: ignore[arg-type]
        return None

    rule = Rule("t", pat.mul(pat.transpose(x, perm=lambda p: p == (1, 0)), P.const("c", 2.0)),
                double)
    assert rewrite_to_fixpoint(g, [rule]).changed is False  # declined: None
    assert seen == [2.0]
    wrong = Rule("t", pat.mul(pat.transpose(x, perm=(0, 1)), P.const("c")), double)
    rewrite_to_fixpoint(g, [wrong])
    assert seen == [2.0]
    with pytest.raises(OpError, match="unknown attribute"):
        pat.transpose(x, permutation=(1, 0))
    with pytest.raises(OpError, match="duplicate rule names"):
        RuleSet("s", [rule, rule])


def test_literal_attributes_are_normalised_like_the_op_stores_them() -> None:
    g = graph_of("graph g(%x: f32[2]):\n  %0: f64[2] = cast[to=f64](%x)\n  return %0\n")
    seen: list[str] = []
    for to in ("float64", "f64", "f16"):
        rule = Rule("cast", pat.cast(x, to=to), lambda x, to=to: seen.append(to))
        assert rewrite_to_fixpoint(g, [rule]).changed is False
    assert seen == ["float64", "f64"]


def test_multi_output_nodes_match_by_output_index() -> None:
    g = graph_of("""
    graph g(%x: f32[4,2]):
      %0: f32[2,2], %1: f32[2,2] = split[axis=0, split=(2, 2)](%x)
      %2: f32[2,2] = neg(%1)
      %3: f32[2,2] = neg(%0)
      return %2, %3
    """)
    def half(x: object) -> object:
        return ops.neg(ops.slice_(x, starts=(2,), ends=(4,), axes=(0,)))

    second = Rule("neg_second_half", pat.neg(Pat(ops.split, x, output=1)), half)
    assert rewrite_to_fixpoint(g, [second]).changed is False  # the split's output 0 is used
    shared = Rule("neg_second_half", pat.neg(Pat(ops.split, x, output=1)), half, shared=True)
    r = rewrite_to_fixpoint(g, [shared])
    assert r.stats == {"neg_second_half": 1}
    assert r.graph.op_counts() == {"split": 1, "slice": 1, "neg": 2}
    verify(r.graph)
    assert_same_outputs(g, r.graph)


def test_multi_output_root_is_replaced_output_by_output() -> None:
    g = graph_of("""
    graph g(%x: f32[4,2]):
      %0: f32[2,2], %1: f32[2,2] = split[axis=0, split=(2, 2)](%x)
      %2: f32[2,2] = add(%0, %1)
      return %2, %1
    """)

    def halves(x: object) -> tuple[object, object]:
        return (ops.slice_(x, starts=(0,), ends=(2,), axes=(0,)),
                ops.slice_(x, starts=(2,), ends=(4,), axes=(0,)))

    r = rewrite_to_fixpoint(g, [Rule("split_to_slices", pat.split(x), halves)])
    assert r.graph.op_counts() == {"slice": 2, "add": 1}
    assert r.graph.output_names() == g.output_names()
    assert_same_outputs(g, r.graph)


def test_wrong_replacement_type_is_an_error() -> None:
    g = graph_of(CHAIN)
    bad = Rule("bad", pat.exp(x), lambda x: ops.cast(x, to="f64"))
    with pytest.raises(RewriteError, match="rule bad replaced"):
        rewrite_to_fixpoint(g, [bad])


def test_rules_that_never_settle_are_an_error() -> None:
    g = graph_of(CHAIN)
    flip = [Rule("exp_a", pat.exp(x), lambda x: ops.exp(x))]
    with pytest.raises(RewriteError, match="no fixpoint"):
        rewrite_to_fixpoint(g, flip, max_sweeps=5)


def test_rule_helpers_see_the_graph() -> None:
    g = graph_of("graph g(%x: f32[2]):\n  %0: f32[2] = identity(%x)\n"
                 "  %1: f32[2] = identity(%0)\n  return %1\n")
    drop = Rule("identity", pat.identity(x, bind="root"),
                lambda x, root: None if is_graph_output(root.outputs[0]) else x)
    r = rewrite_to_fixpoint(g, RuleSet("s", [drop]))
    assert r.stats == {"identity": 1} and len(r.graph.nodes) == 1
    assert rewrite_to_fixpoint(r.graph, [drop]).changed is False
