"""to_dot() and to_svg(): syntax, one element per IR node, clusters, highlights, engines."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.frontends.inspect import to_dot, to_svg

from .models import attention_block, lenet, mlp

SVG = "{http://www.w3.org/2000/svg}"


def _groups(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if cls in (g.get("class") or "").split()]


def test_dot_declares_every_element_and_edge() -> None:
    g = mlp()
    text = to_dot(g)
    assert text.startswith('digraph "mlp" {') and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    for n in g.nodes:
        assert len(re.findall(rf'^\s*"node:{re.escape(n.name)}" \[', text, re.M)) == 1
    assert re.search(r'"input:x" \[label="x\\nf32\[N,784\]", shape=ellipse', text)
    assert 'shape=note' in text and 'shape=doubleoctagon' in text
    uses = sum(len({v for v in n.inputs if v is not None}) for n in g.nodes) + len(g.outputs)
    assert text.count(" -> ") == uses
    assert '"node:fc1/matmul" -> "node:fc1/add" [label="f32[N,256]"]' in text


def test_dot_nested_clusters_and_params_placement() -> None:
    text = to_dot(attention_block())
    # layers.0 holds layers.0.attn which holds the q projection: nested subgraph blocks
    outer = text.index('subgraph "cluster_layers.0" {')
    attn = text.index('subgraph "cluster_layers.0.attn" {')
    q = text.index('subgraph "cluster_layers.0.attn.q_proj" {')
    assert outer < attn < q
    weight = text.index('"param:layers.0.attn.q_proj.weight" [')
    assert q < weight < text.index('subgraph "cluster_layers.0.attn.k_proj" {')
    flat = to_dot(attention_block(), cluster=False, params=False)
    assert "subgraph" not in flat and "param:" not in flat


def test_dot_escapes_names() -> None:
    with GraphBuilder('we"ird') as b:
        x = b.input("x", "f32", (2,))
        with b.scope('a"b'):
            y = ops.relu(x, name='r\\"')
        g = b.build([y])
    text = to_dot(g, highlight={'a"b/r\\"': "#ff0000"})
    assert 'digraph "we\\"ird"' in text
    assert '"node:a\\"b/r\\\\\\"" [' in text
    assert 'fillcolor="#ff0000"' in text


def test_svg_is_well_formed_with_one_box_per_node() -> None:
    for g in (mlp(), lenet(), attention_block(layers=2)):
        svg = to_svg(g)
        nodes = _groups(svg, "node")
        nodes = [e for e in nodes if e.get("id", "").startswith("node:")]
        assert sorted(e.get("id") for e in nodes) == sorted(f"node:{n.name}" for n in g.nodes)
        for e in nodes:
            assert len(e.findall(f"{SVG}rect")) == 1
            texts = [t.text for t in e.findall(f"{SVG}text")]
            node = g.node_map[e.get("id")[5:]]
            assert texts[0] == node.op.name and e.get("data-op") == node.op.name
        assert len(_groups(svg, "input")) == len(g.inputs)
        assert len(_groups(svg, "output")) == len(g.outputs)


def test_svg_cluster_rect_per_module() -> None:
    g = attention_block()
    svg = to_svg(g)
    ids = {e.get("id") for e in _groups(svg, "cluster")}
    modules = {n.name.partition("/")[0] for n in g.nodes if "/" in n.name}
    assert {f"cluster:{m}" for m in modules} <= ids
    assert "cluster:layers.0" in ids
    root = ET.fromstring(svg)
    order = [g.get("class") for g in root.iter(f"{SVG}g")
             if g.get("class") in ("clusters", "edges", "nodes")]
    assert order == ["clusters", "edges", "nodes"]  # clusters are drawn behind
    assert not _groups(to_svg(g, cluster=False), "cluster")


def test_svg_shows_shapes_and_inline_params() -> None:
    svg = to_svg(mlp())
    box = next(e for e in _groups(svg, "node") if e.get("id") == "node:fc1/matmul")
    texts = [t.text for t in box.findall(f"{SVG}text")]
    assert texts == ["matmul", "f32[N,256]", "weight f32[784,256]"]
    boxes = to_svg(mlp(), params="boxes")
    assert {e.get("id") for e in _groups(boxes, "param")} == {
        "param:fc1.weight", "param:fc1.bias", "param:fc2.weight", "param:fc2.bias"}
    assert not _groups(to_svg(mlp(), params="none"), "param")
    with pytest.raises(ValueError, match="params must be"):
        to_svg(mlp(), params="inside")  # type: ignore[arg-type]


def test_svg_highlight() -> None:
    svg = to_svg(mlp(), highlight=["fc1/relu"])
    marked = [e.get("id") for e in _groups(svg, "highlight") if e.get("id")]
    assert marked == ["node:fc1/relu"]
    svg = to_svg(mlp(), highlight={"fc2/add": "#00ff00"})
    rect = next(e for e in _groups(svg, "node") if e.get("id") == "node:fc2/add").find(
        f"{SVG}rect")
    assert "fill:#00ff00" in rect.get("style")


def test_svg_escapes_text() -> None:
    with GraphBuilder("<g&>") as b:
        x = b.input("a<b", "f32", (2,))
        g = b.build([ops.relu(x, name="r&<>")])
    root = ET.fromstring(to_svg(g))
    assert any(t.text == "a<b" for t in root.iter(f"{SVG}text"))


def test_graphviz_engine_falls_back_without_dot(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="dot"):
        svg = to_svg(mlp(), engine="graphviz")
    assert len(_groups(svg, "node")) == 5
    assert to_svg(mlp(), engine="auto") == to_svg(mlp(), engine="builtin")
    with pytest.raises(ValueError, match="engine"):
        to_svg(mlp(), engine="neato")  # type: ignore[arg-type]


def test_graphviz_engine_uses_dot_and_normalises_classes(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    # a stand-in `dot` that records its input and answers with Graphviz-like SVG
    fake = tmp_path / "dot"
    fake.write_text(
        "#!/bin/sh\ncat > \"$(dirname \"$0\")/input.dot\"\n"
        "echo '<svg xmlns=\"http://www.w3.org/2000/svg\"><g id=\"graph0\" class=\"graph\">"
        "<g id=\"input:x\" class=\"node input\"><title>x</title></g>"
        "<g id=\"node:fc1/matmul\" class=\"node\"><title>m</title></g></g></svg>'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    svg = to_svg(mlp(), engine="graphviz")
    assert (tmp_path / "input.dot").read_text() == to_dot(mlp(), params=False)
    assert [e.get("id") for e in _groups(svg, "node")] == ["node:fc1/matmul"]
    assert [e.get("class") for e in _groups(svg, "input")] == ["input"]


def test_svg_of_graph_without_nodes() -> None:
    with GraphBuilder("empty") as b:
        x = b.input("x", "f32", (3,))
        w = b.param("w", np.zeros(3, np.float32))
        g = b.build([x, w], verify=False)
    root = ET.fromstring(to_svg(g, params="boxes"))
    assert root.tag == f"{SVG}svg"
    assert len([e for e in root.iter(f"{SVG}g") if e.get("class") == "output"]) == 2
