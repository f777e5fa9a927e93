"""The layered layout: layers, crossings, non-overlapping boxes, cluster rectangles, speed."""

from __future__ import annotations

import itertools

import pytest

from lbdl_graph import Graph, GraphBuilder, ops
from lbdl_graph.frontends.inspect import count_crossings, layered_layout, to_svg
from lbdl_graph.frontends.inspect.dot import cluster_tree
from lbdl_graph.frontends.inspect.layout import Layout
from lbdl_graph.frontends.inspect.svg import _groups, graph_layout

from .models import attention_block, chain, lenet, mlp


def forward_backward(n: int) -> Graph:
    """A forward chain whose activations a backward chain reads in reverse (long edges)."""
    with GraphBuilder("fwd_bwd") as b:
        x = b.input("x", "f32", ("N", 8))
        acts = []
        with b.scope("fwd"):
            for _ in range(n):
                x = ops.tanh(x)
                acts.append(x)
        with b.scope("bwd"):
            for a in reversed(acts):
                x = ops.mul(x, a)
        return b.build([x])


GRAPHS = {"mlp": mlp, "lenet": lenet, "block": lambda: attention_block(layers=2),
          "chain": lambda: chain(40, scope_every=8), "fwd_bwd": lambda: forward_backward(12)}


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _check_boxes(layout: Layout) -> None:
    for layer in layout.layers:
        boxes = [layout.boxes[v] for v in layer]
        for a, b in itertools.pairwise(boxes):
            assert a.right < b.left, f"{a.id} and {b.id} overlap in layer {a.layer}"
    bands = [(min(layout.boxes[v].top for v in layer), max(layout.boxes[v].bottom for v in layer))
             for layer in layout.layers if layer]
    for (_, bottom), (top, _) in itertools.pairwise(bands):
        assert bottom < top  # layers are stacked downwards without overlap


def test_count_crossings() -> None:
    succ = [[3], [2], [], []]
    assert count_crossings([[0, 1], [2, 3]], succ) == 1
    assert count_crossings([[0, 1], [3, 2]], succ) == 0
    k33 = [[3, 4, 5], [3, 4, 5], [3, 4, 5], [], [], []]
    assert count_crossings([[0, 1, 2], [3, 4, 5]], k33) == 9


def test_barycenter_removes_crossings() -> None:
    top, bottom = ["a", "b", "c", "d"], ["w", "x", "y", "z"]
    edges = [("a", "z"), ("b", "y"), ("c", "x"), ("d", "w"), ("a", "y")]
    sizes = dict.fromkeys(top + bottom, (40.0, 20.0))
    layout = layered_layout(top + bottom, edges, sizes)
    assert count_crossings([[0, 1, 2, 3], [4, 5, 6, 7]],
                           [[7, 6], [6], [5], [4], [], [], [], []]) == 8
    assert layout.crossings == 0
    xs = {v: layout.boxes[v].x for v in top + bottom}
    for u1, v1 in edges:
        for u2, v2 in edges:
            assert (xs[u1] - xs[u2]) * (xs[v1] - xs[v2]) >= 0, (u1, v1, u2, v2)


@pytest.mark.parametrize("name", GRAPHS)
def test_layers_point_down_and_boxes_do_not_overlap(name: str) -> None:
    g = GRAPHS[name]()
    layout, _ = graph_layout(g, params="boxes")
    _check_boxes(layout)
    for u, v, points in layout.edges:
        assert layout.boxes[u].layer < layout.boxes[v].layer
        ys = [layout.boxes[u].y, *(p[1] for p in points), layout.boxes[v].y]
        assert ys == sorted(ys)
    # parameters sit just above their first consumer
    for p in g.params:
        users = [layout.boxes[f"node:{n.name}"].layer for n in g.consumers[p.value]]
        assert layout.boxes[f"param:{p.name}"].layer == min(users) - 1


@pytest.mark.parametrize("name", GRAPHS)
def test_cluster_rects_hold_members_and_only_members(name: str) -> None:
    g = GRAPHS[name]()
    for params in ("inline", "boxes"):
        layout, _ = graph_layout(g, params=params)
        groups = _groups(cluster_tree(g, params=params == "boxes"))
        for path, (x, y, w, h) in layout.clusters.items():
            rect = (x, y, x + w, y + h)
            for vid, b in layout.boxes.items():
                box = (b.left, b.top, b.right, b.bottom)
                if path in groups.get(vid, ()):
                    assert rect[0] < box[0] and box[2] < rect[2]
                    assert rect[1] < box[1] and box[3] < rect[3]
                else:
                    assert not _overlap(rect, box), f"{vid} inside cluster {path}"


def test_long_edges_get_dummies_within_budget() -> None:
    g = forward_backward(10)
    layout, _ = graph_layout(g)
    assert layout.stats["dummies"] > 0 and layout.stats["long_edges"] == 0
    assert any(points for _, _, points in layout.edges)
    ids = [f"node:{n.name}" for n in g.nodes] + ["input:x"]
    edges = [(f"node:{g.producer(v).name}" if g.producer(v) else "input:x", f"node:{n.name}")
             for n in g.nodes for v in n.inputs]
    tight = layered_layout(ids, edges, dict.fromkeys(ids, (50.0, 30.0)), dummy_budget=0)
    # tanh_i -> the backward mul reading it spans layers for every i but the last
    assert tight.stats["dummies"] == 0 and tight.stats["long_edges"] == 9
    _check_boxes(tight)


def test_cycle_is_rejected() -> None:
    with pytest.raises(ValueError, match="cycle"):
        layered_layout(["a", "b"], [("a", "b"), ("b", "a")], {"a": (1, 1), "b": (1, 1)})


def test_large_chain_renders() -> None:
    # speed is measured by hand (about 0.13 s here), not asserted: tests check correctness
    g = chain(2000, scope_every=50)
    svg = to_svg(g)
    assert svg.count('class="node"') == 2000
