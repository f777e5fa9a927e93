"""collapse(): boxes by scope, automatic depth, expand, focus, links and the size limit."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import Graph, GraphBuilder, ops
from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.inspect import PictureError, ScopeError, collapse, scope_tree
from lbdl_graph.frontends.inspect.collapse import Picture, compact
from lbdl_graph.frontends.inspect.scopes import scope_parts

from .models import mlp


@pytest.fixture(scope="module")
def gpt() -> Graph:
    return zoo.get("gpt_tiny").trace()


def _check_partition(g: Graph, pic: Picture) -> None:
    """Every drawn node is in exactly one box, and links are exactly the cross-box dataflow."""
    assert set(pic.box_of) <= set(g.nodes)
    for bid, box in pic.boxes.items():
        assert all(pic.box_of[n] == bid for n in box.nodes)
    assert sum(len(b.nodes) for b in pic.boxes.values()) == len(pic.box_of) == pic.nodes
    pairs = [(lk.src, lk.dst) for lk in pic.links]
    assert len(pairs) == len(set(pairs)) and all(s != d for s, d in pairs)
    expect = set()
    for n in pic.box_of:
        for v in n.inputs:
            p = g.producer(v) if v is not None else None
            if p in pic.box_of and pic.box_of[p] != pic.box_of[n]:
                expect.add((pic.box_of[p], pic.box_of[n]))
    assert expect <= set(pairs)
    assert all(s in pic.boxes and d in pic.boxes for s, d in pairs)


def test_auto_depth_is_the_deepest_within_target(gpt: Graph) -> None:
    pic = collapse(gpt)
    assert len(pic.boxes) <= 60
    assert 1 <= pic.depth < pic.max_depth
    assert len(collapse(gpt, depth=pic.depth + 1).boxes) > 60
    _check_partition(gpt, pic)
    small = collapse(gpt, target=20)
    assert small.depth < pic.depth and len(small.boxes) <= 20
    assert collapse(mlp()).depth == collapse(mlp()).max_depth  # small graphs come in full


def test_depth_one_boxes_are_top_level_scopes(gpt: Graph) -> None:
    pic = collapse(gpt, depth=1)
    tree = scope_tree(gpt)
    scopes = {b.tree.key for b in pic.boxes.values() if b.kind == "scope" and b.tree}
    assert scopes == set(tree.children)
    top_nodes = [n for n in gpt.nodes if not scope_parts(n.scope)]
    kinds = {"input", "output", "scope"} | ({"node"} if top_nodes else set())
    assert {b.kind for b in pic.boxes.values()} == kinds
    assert pic.frames == {}
    blk = pic.boxes["scope:layers.0"]
    assert blk.title == "layers.0" and len(blk.nodes) == tree.find("layers.0").total_nodes
    n_params = tree.find("layers.0").total_params
    assert blk.lines[0] == f"{len(blk.nodes)} nodes, {compact(n_params)} params"
    top_op = next(iter(tree.find("layers.0").op_counts()))
    assert blk.lines[1].startswith(top_op)
    assert blk.lines[2] == "out f32[N,T,16]"
    assert "layers.0" in blk.tip and "MACs" in blk.tip
    chain = [(lk.src, lk.dst) for lk in pic.links]
    assert ("scope:layers.0", "scope:layers.1") in chain
    _check_partition(gpt, pic)


def test_full_depth_draws_every_node(gpt: Graph) -> None:
    pic = collapse(gpt, depth=99)
    assert pic.depth == pic.max_depth
    assert {b.kind for b in pic.boxes.values()} == {"input", "output", "node"}
    assert sum(b.kind == "node" for b in pic.boxes.values()) == len(gpt.nodes)
    _check_partition(gpt, pic)
    # open scopes become frames; a node sits in the frame of its own scope
    node = gpt.node_map["layers.0.attn.out_proj/matmul"]
    assert pic.boxes[pic.box_of[node]].frame == ("layers.0", "attn", "out_proj")
    assert pic.frames[("layers.0", "attn", "out_proj")] == "out_proj"


def test_expand_opens_a_scope_and_its_parents(gpt: Graph) -> None:
    pic = collapse(gpt, depth=1, expand=["layers.0.attn"])
    assert "scope:layers.0" not in pic.boxes and "scope:layers.1" in pic.boxes
    assert "scope:layers.0/ln1" in pic.boxes and "scope:layers.0/attn" not in pic.boxes
    assert "scope:layers.0/attn/out_proj" in pic.boxes
    assert "node:layers.0.attn/softmax" in pic.boxes
    _check_partition(gpt, pic)
    with pytest.raises(ScopeError, match=r"nearest: layers\.0/attn"):
        collapse(gpt, expand=["layers.0.atn"])


def test_focus_draws_one_scope_with_boundary_boxes(gpt: Graph) -> None:
    pic = collapse(gpt, focus="layers.0.attn")
    inside = set(scope_tree(gpt).find("layers.0.attn").all_nodes())
    assert set(pic.box_of) == inside and pic.depth == pic.max_depth
    bounds = {b.id for b in pic.boxes.values() if b.kind == "boundary"}
    assert bounds == {"in:layers.0.ln1/layer_norm", "out:layers.0.attn.out_proj/add"}
    assert pic.frames[("layers.0", "attn")] == "layers.0/attn"
    assert pic.focus == "layers.0/attn" and "layers.0/attn" in pic.label
    _check_partition(gpt, pic)
    shallow = collapse(gpt, focus="layers.0", depth=1)
    assert len(shallow.boxes) < len(collapse(gpt, focus="layers.0").boxes)
    with pytest.raises(ScopeError, match="nearest"):
        collapse(gpt, focus="layers.0.atn")
    with pytest.raises(ScopeError, match="outside the focus"):
        collapse(gpt, focus="layers.0", expand=["layers.1.attn"])


def test_too_many_boxes_names_the_count_and_a_depth_that_fits(gpt: Graph) -> None:
    full = len(collapse(gpt, depth=99).boxes)
    d2 = len(collapse(gpt, depth=2).boxes)
    with pytest.raises(PictureError) as e:
        collapse(gpt, depth=99, max_boxes=d2)
    msg = str(e.value)
    assert f"would have {full} boxes (limit {d2})" in msg
    assert f"at depth 2 (--depth 2) it has {d2}" in msg and "lbdl-graph explore" in msg
    with pytest.raises(PictureError, match="depth must be at least 1"):
        collapse(gpt, depth=0)
    with pytest.raises(PictureError, match="params must be"):
        collapse(gpt, params="inside")  # type: ignore[arg-type]


def test_links_are_labelled_where_a_box_sends_several_types() -> None:
    with GraphBuilder("two") as b:
        x = b.input("x", "f32", ("N", 4))
        with b.scope("blk"):
            y = ops.relu(x)
            z = ops.reduce_sum(y, axes=(1,), keepdims=False)
        g = b.build([ops.tanh(y, name="a"), ops.exp(z, name="c"), ops.exp(z, name="d")])
    pic = collapse(g, depth=1)
    labels = {lk.dst: lk.label for lk in pic.links if lk.src == "scope:blk"}
    assert labels == {"node:a": "f32[N,4]", "node:c": "f32[N]", "node:d": "f32[N]"}
    assert pic.boxes["scope:blk"].lines[-1] == "out f32[N,4], f32[N]"
    full = collapse(g, depth=2)
    assert {lk.label for lk in full.links} == {""}  # each node box shows its one output type


def test_params_inline_boxes_or_none() -> None:
    g = mlp()
    inline = collapse(g, depth=99)
    assert inline.boxes["node:fc1/matmul"].lines == ["f32[N,256]", "weight f32[784,256]"]
    boxes = collapse(g, depth=99, params="boxes")
    params = {b.id for b in boxes.boxes.values() if b.kind == "param"}
    assert params == {"param:fc1.weight", "param:fc1.bias", "param:fc2.weight",
                      "param:fc2.bias"}
    assert ("param:fc1.weight", "node:fc1/matmul") in {(lk.src, lk.dst) for lk in boxes.links}
    assert collapse(g, depth=99, params="none").boxes["node:fc1/matmul"].lines == ["f32[N,256]"]


def test_nodes_computed_from_weights_join_their_consumers_scope() -> None:
    # as imported ONNX has them: Identity/Transpose of a weight at top level, read in one layer
    with GraphBuilder("imported") as b:
        x = b.input("x", "f32", ("N", 4))
        w = b.param("w", np.zeros((4, 4), np.float32))
        wt = ops.transpose(w, perm=(1, 0), name="Transpose_7")
        shared = ops.identity(w, name="Identity_1")
        with b.scope("enc.0"):
            y = ops.matmul(x, wt)
        with b.scope("enc.1"):
            y = ops.matmul(ops.matmul(y, shared), shared)
        with b.scope("dec"):
            z = ops.matmul(y, shared)
        g = b.build([z])
    pic = collapse(g, depth=1)
    assert pic.box_of[g.node_map["Transpose_7"]] == "scope:enc.0"  # the caller's node objects
    assert "node:Identity_1" in pic.boxes  # read by two scopes: stays where it is
    assert len(pic.boxes["scope:enc.0"].nodes) == 2
    _check_partition(g, pic)
    assert scope_tree(g).find("enc.0").total_nodes == 1  # the graph itself is unchanged


def test_compact_counts() -> None:
    assert [compact(n) for n in (12, 1536, 2362368, 124439808, 7_000_000_000)] == [
        "12", "1.54k", "2.36M", "124M", "7G"]
