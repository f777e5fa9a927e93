"""Scope trees: level splitting, per-scope totals and nearest-scope errors."""

from __future__ import annotations

import pytest

from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.inspect import node_macs
from lbdl_graph.frontends.inspect.common import type_bytes
from lbdl_graph.frontends.inspect.scopes import (
    ScopeError,
    scope_parts,
    scope_path,
    scope_tree,
)


@pytest.mark.parametrize(("scope", "parts"), [
    ("", ()),
    ("fc1", ("fc1",)),
    ("layers.0.attn", ("layers.0", "attn")),
    ("grad/layers.11.mlp.fc1", ("grad", "layers.11", "mlp", "fc1")),
    ("optim/layers.0.attn.out_proj.weight", ("optim", "layers.0", "attn", "out_proj", "weight")),
    ("encoder.layer.0.attention.self", ("encoder", "layer.0", "attention", "self")),
    ("0.conv", ("0", "conv")),
])
def test_scope_parts_keep_indices_with_their_container(scope: str, parts: tuple[str, ...]) -> None:
    assert scope_parts(scope) == parts
    assert scope_path(scope) == "/".join(parts)


def test_tree_totals_add_up_to_the_whole_graph() -> None:
    entry = zoo.get("gpt_tiny")
    g = entry.trace()
    b = {"N": 2, "T": 5}
    t = scope_tree(g, b)
    assert t.total_nodes == len(g.nodes)
    assert t.total_params == sum(p.data.size for p in g.params)
    assert t.total_macs == sum(node_macs(n, b) for n in g.nodes)
    assert t.total_bytes == sum(type_bytes(v.type, b) for n in g.nodes for v in n.outputs)
    for sub in t.walk():
        assert sub.total_nodes == len(sub.nodes) + sum(c.total_nodes for c in sub.children.values())
    # every node sits at exactly one place, under its own scope
    placed = [n for s in t.walk() for n in s.nodes]
    assert sorted(id(n) for n in placed) == sorted(id(n) for n in g.nodes)
    for s in t.walk():
        assert all(scope_parts(n.scope) == s.path for n in s.nodes)


def test_gpt_blocks_are_one_level_each() -> None:
    cfg = zoo.get("gpt_tiny").config
    t = scope_tree(zoo.get("gpt_tiny").trace())
    blocks = [k for k in t.children if k.startswith("layers.")]
    assert blocks == [f"layers.{i}" for i in range(cfg.num_layers)]
    block = t.find("layers.1")
    assert {"attn", "mlp", "ln1", "ln2"} <= set(block.children)
    # parameters land in the module that owns them
    attn = t.find("layers.0.attn")
    assert {p.name for p in attn.params} >= {"layers.0.attn.in_proj_weight"}
    assert t.find("layers.0/attn") is attn


def test_unknown_scope_names_the_nearest() -> None:
    t = scope_tree(zoo.get("gpt_tiny").trace())
    with pytest.raises(ScopeError, match=r"layers\.0\.atn.*nearest: layers\.0/attn"):
        t.find("layers.0.atn")
    with pytest.raises(ScopeError, match="no scope 'zzz'"):
        t.find("zzz")


def test_format_lists_each_scope_with_totals() -> None:
    t = scope_tree(zoo.get("mlp_tiny").trace())
    text = t.format()
    assert text.splitlines()[1].startswith("(graph)")
    for key in t.children:
        assert any(line.strip().startswith(key) for line in text.splitlines())
