"""The VJP table covers every differentiable op (directly or through a decomposition)."""

from __future__ import annotations

from lbdl_graph import OPS
from lbdl_graph.passes.autodiff import VJPS


def test_every_differentiable_op_has_a_vjp() -> None:
    assert VJPS.missing() == []


def test_only_differentiable_ops_have_vjps() -> None:
    assert sorted(op.name for op in VJPS if not op.differentiable) == []


def test_rules_follow_the_naming_scheme() -> None:
    for op in VJPS:
        rule = VJPS[op]
        assert rule.__name__ == f"_{op.name}_vjp", rule.__name__
        assert rule.__module__.startswith("lbdl_graph.passes.autodiff.rules_"), rule.__module__


def test_ops_without_rules_have_decompositions() -> None:
    fallbacks = [op for op in OPS.values() if op.differentiable and op not in VJPS]
    assert all(op.decompose is not None for op in fallbacks)
