"""Printer golden tests and print -> parse -> print round trips."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ParseError, ops, parse_graph, print_graph

MLP_TEXT = """\
graph mlp(%x: f32[N,784]):
  param %fc.weight: f32[10,784]
  param %fc.bias: f32[10]
  buffer %scale: f32[]
  %0: f32[784,10] = transpose[perm=(1, 0)](%fc.weight)
  %1: f32[N,10] = matmul(%x, %0)
  %2: f32[N,10] = add(%1, %fc.bias)
  %3: f32[N,10] = mul(%2, %scale)
  %4: f32[N,1] = reduce_max[axes=(-1,), keepdims=True](%3)
  %5: f32[N,10] = sub(%3, %4)
  %6: f32[N,10] = softmax[axis=-1](%5)
  return %6
"""


def _mlp():  # type: ignore[no-untyped-def]
    with GraphBuilder("mlp") as b:
        x = b.input("x", "f32", ("N", 784))
        w = b.param("fc.weight", np.zeros((10, 784), np.float32))
        bias = b.param("fc.bias", np.zeros((10,), np.float32))
        s = b.param("scale", np.float32(2.0), trainable=False)
        h = ops.mul(ops.add(ops.matmul(x, ops.transpose(w, perm=(1, 0))), bias), s)
        y = ops.softmax(ops.sub(h, ops.reduce_max(h, axes=(-1,))), axis=-1)
        return b.build([y])


def test_golden_print() -> None:
    assert print_graph(_mlp()) == MLP_TEXT


def test_round_trip_golden() -> None:
    assert print_graph(parse_graph(MLP_TEXT)) == MLP_TEXT


def test_round_trip_with_every_attribute_kind() -> None:
    with GraphBuilder("kinds") as b:
        x = b.input("x", "f32", ("N", 6))
        key = b.input("weird name", "i64", (2,))
        c = ops.constant(value=np.array([[1.5, -np.inf], [np.nan, 0.25]], np.float32))
        a, rest = ops.split(x, axis=1, split=(2, 4))
        d = ops.dropout(rest, key, ratio=0.25, salt=3)
        e = ops.cast(a, to="f64")
        f = ops.clip(x, min=None, max=1.0)
        g = ops.gelu(x, approximate="tanh")
        graph = b.build([c, d, e, f, g])
    text = print_graph(graph, show_names=True, show_source=True)
    again = print_graph(parse_graph(text), show_names=True, show_source=True)
    assert again == text
    assert "%\"weird name\"" in text and "to=f64" in text and "approximate='tanh'" in text
    assert "tensor(f32[2,2], [[1.5, -inf], [nan, 0.25]])" in text


def test_parse_with_param_data() -> None:
    data = {"fc.weight": np.ones((10, 784), np.float32), "fc.bias": np.ones(10, np.float32),
            "scale": np.float32(3)}
    g = parse_graph(MLP_TEXT, params=data)
    assert g.param_map["scale"].data == 3 and not g.param_map["scale"].trainable


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty"),
     ("graph g(%x: f32[2]):\n  %0: f32[2] = nosuchop(%x)\n  return %0\n", "line 2: unknown op"),
     ("graph g(%x: f32[2]):\n  %0: f32[2] = relu(%y)\n  return %0\n", "undefined value %y"),
     ("graph g(%x: f32[2]):\n  %0: f32[3] = relu(%x)\n  return %0\n", "declared f32"),
     ("graph g(%x: f32[2]):\n  %0: f32[2] = relu(%x)\n", "no 'return'"),
     ("graph g(%x: f32[2]):\n  %0: f32[2] = softmax[axis=](%x)\n  return %0\n", "line 2"),
     ("graph g(%x: q9[2]):\n  return %x\n", "bad type")],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_graph(text)


def test_show_scopes_prints_and_parses_scope_and_origin() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (3,))
        with b.scope("h.0.attn"):
            y = ops.relu(x)
        with b.scope("my block"), b.provenance(origin="fuse_x:rule"):
            z = ops.neg(y)
        g = b.build([z])
    plain = print_graph(g)
    assert "scope=" not in plain and "#" not in plain  # the default output is unchanged
    text = print_graph(g, show_scopes=True, show_names=True, show_source=True)
    assert "# h.0.attn/relu @ " in text and text.count("scope=h.0.attn\n") == 1
    assert "scope='my block' origin=fuse_x:rule" in text
    back = parse_graph(text)
    assert [(n.name, n.scope, n.origin) for n in back.nodes] == [
        ("h.0.attn/relu", "h.0.attn", ""), ("my block/neg", "my block", "fuse_x:rule")]
    assert [n.source.line if n.source else None for n in back.nodes] == \
        [n.source.line if n.source else None for n in g.nodes]
    assert print_graph(back) == plain
    only = parse_graph(print_graph(g, show_scopes=True))
    assert [(n.scope, n.origin) for n in only.nodes] == [("h.0.attn", ""),
                                                         ("my block", "fuse_x:rule")]
    assert [n.name for n in only.nodes] == ["relu", "neg"]
