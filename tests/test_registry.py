"""Every op has every facet it must have: the test that keeps the facet tables complete."""

from __future__ import annotations

import importlib

import pytest

from lbdl_graph import OPS, OpTable
from lbdl_graph.frontends.cli.ops_cmd import FACETS


@pytest.mark.parametrize(("title", "module", "attr"), FACETS, ids=[f[0] for f in FACETS])
def test_every_op_has_a_rule(title: str, module: str, attr: str) -> None:
    table: OpTable = getattr(importlib.import_module(module), attr)
    assert table.missing() == [], f"{title}: ops without a rule"


def test_tables_only_hold_registered_ops() -> None:
    for _, module, attr in FACETS:
        table: OpTable = getattr(importlib.import_module(module), attr)
        for op in table:
            assert OPS.get(op.name) is op
