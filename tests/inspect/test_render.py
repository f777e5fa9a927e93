"""to_dot() and to_svg(): DOT text of collapsed pictures, SVG laid out by dot, engine errors."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.inspect import (
    LayoutError,
    collapse,
    find_engine,
    parse_svg,
    run_dot,
    to_dot,
    to_svg,
)
from lbdl_graph.frontends.inspect import render as render_mod

from .models import attention_block, mlp

SVG = "{http://www.w3.org/2000/svg}"


def _groups(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if cls in (g.get("class") or "").split()]


def _texts(g: ET.Element) -> list[str]:
    return [t.text or "" for t in g.iter(f"{SVG}text")]


def test_dot_declares_every_box_and_link() -> None:
    g = mlp()
    text = to_dot(g)
    pic = collapse(g)
    assert text.startswith('digraph "mlp" {') and text.rstrip().endswith("}")
    for bid in pic.boxes:
        assert len(re.findall(rf'^\s*"{re.escape(bid)}" \[', text, re.M)) == 1
    assert len(re.findall(r'^\s*"[^"]+" -> "[^"]+"', text, re.M)) == len(pic.links)
    assert '"node:fc1/matmul" -> "node:fc1/add";' in text
    assert 'id="node:fc1/matmul", class="op"' in text
    assert "<b>matmul</b><br/>f32[N,256]<br/>weight f32[784,256]" in text
    assert 'subgraph "cluster_fc1" {' in text and 'id="cluster:fc1"' in text
    flat = to_dot(g, cluster=False, params="none")
    assert "subgraph" not in flat and "weight" not in flat


def test_dot_escapes_names() -> None:
    with GraphBuilder('we"ird') as b:
        x = b.input("x", "f32", (2,))
        with b.scope('a"b'):
            y = ops.relu(x, name='r<\\"&')
        g = b.build([y])
    text = to_dot(g, highlight={'a"b/r<\\"&': "#ff0000"})
    assert 'digraph "we\\"ird"' in text
    assert '"node:a\\"b/r<\\\\\\"&" [' in text
    assert 'fillcolor="#ff0000"' in text and 'class="op highlight"' in text
    root = ET.fromstring(to_svg(g))  # the engine accepts it and the SVG parses
    assert any(g.get("id") == 'node:a"b/r<\\"&' for g in root.iter(f"{SVG}g"))


def test_svg_has_one_group_per_box_with_its_text() -> None:
    for g in (mlp(), attention_block(layers=2), zoo.get("gpt_tiny").trace()):
        svg = to_svg(g)
        pic = collapse(g)
        groups = {e.get("id"): e for e in _groups(svg, "node")}
        assert set(groups) == set(pic.boxes)
        for bid, box in pic.boxes.items():
            e = groups[bid]
            kind = "op" if box.kind == "node" else box.kind
            assert (e.get("class") or "").split() == ["node", kind]
            assert _texts(e) == [box.title, *box.lines]
        assert {e.get("id") for e in _groups(svg, "cluster")} == {
            "cluster:" + "/".join(p) for p in pic.frames}


def test_svg_caption_depth_and_expand() -> None:
    g = zoo.get("gpt_tiny").trace()
    svg = to_svg(g, depth=1, title="tiny GPT")
    assert "tiny GPT: depth 1 of 4" in svg
    ids = {e.get("id") for e in _groups(to_svg(g, depth=1, expand=["layers.1"]), "node")}
    assert "scope:layers.0" in ids and "scope:layers.1" not in ids
    assert "scope:layers.1/attn" in ids


def test_automatic_depth_is_lowered_until_the_picture_fits() -> None:
    g = zoo.get("gpt_tiny").trace()
    assert "depth 2 of 4" in to_svg(g)
    small = to_svg(g, max_side_px=1200)
    assert "depth 1 of 4" in small and parse_svg(small).long_side_px <= 1200
    assert "depth 2 of 4" in to_svg(g, depth=2, max_side_px=1200)  # an explicit depth stays
    tiny = parse_svg(to_svg(g, max_side_px=10))  # depth 1 is the floor
    assert tiny.long_side_px > 10 and len(tiny.boxes) == len(collapse(g, depth=1).boxes)


def test_svg_highlight_marks_the_box_holding_the_node() -> None:
    g = zoo.get("gpt_tiny").trace()
    svg = to_svg(g, depth=1, highlight=["layers.1.attn/softmax"])
    marked = [e.get("id") for e in _groups(svg, "highlight")]
    assert marked == ["scope:layers.1"]


def test_svg_of_graph_without_nodes() -> None:
    with GraphBuilder("empty") as b:
        x = b.input("x", "f32", (3,))
        w = b.param("w", np.zeros(3, np.float32))
        g = b.build([x, w], verify=False)
    svg = to_svg(g)
    assert {e.get("id") for e in _groups(svg, "node")} == {
        "input:x", "param:w", "output:0:x", "output:1:w"}
    assert len(_groups(svg, "output")) == 2


def test_svg_geometry_of_small_pictures() -> None:
    for g in (mlp(), zoo.get("lenet_digits").trace()):
        geo = parse_svg(to_svg(g))
        assert geo.overlaps() == [] and geo.min_font_px >= 9
        assert len(geo.boxes) == len(collapse(g).boxes)


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_engine_failure_and_timeout_are_typed(tmp_path: Path) -> None:
    bad = _script(tmp_path / "bad", "cat >/dev/null; echo 'syntax error in line 1' >&2; exit 3")
    with pytest.raises(LayoutError, match=r"bad failed \(exit 3\): syntax error in line 1"):
        run_dot("digraph {}", engine=bad)
    slow = _script(tmp_path / "slow", "exec sleep 30")
    with pytest.raises(LayoutError, match=r"did not finish the layout in 0.5 s"):
        to_svg(mlp(), engine=slow, timeout=0.5)
    with pytest.raises(LayoutError, match="syntax error"):
        run_dot("digraph { a -> }")  # the real engine's message comes through


def test_engine_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _script(tmp_path / "dot", "cat >/dev/null; echo '<svg/>'")
    monkeypatch.delenv("LBDL_DOT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    assert find_engine() == fake  # a system dot wins
    assert run_dot("digraph {}") == "<svg/>\n"
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    wheel = render_mod._wheel_binary()
    if wheel is not None:  # the graphviz-pure wheel is found without PATH
        assert find_engine() == wheel
    monkeypatch.setattr(render_mod, "_wheel_binary", lambda: None)
    with pytest.raises(LayoutError, match="pip install graphviz-pure"):
        find_engine()
    monkeypatch.setenv("LBDL_DOT", fake)
    assert find_engine() == fake
    monkeypatch.setenv("LBDL_DOT", str(tmp_path / "missing"))
    with pytest.raises(LayoutError, match="LBDL_DOT"):
        find_engine()
