"""Graphs as Model Explorer JSON: namespaces, edges, attributes, ONNX conversion, --out files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.frontends import InputSpec, zoo
from lbdl_graph.frontends.inspect.explorer_graph import (
    fmt_attr,
    input_id,
    me_graph,
    output_id,
    param_id,
)
from lbdl_graph.frontends.inspect.explorer_onnx import onnx_me_graph, onnx_scope
from lbdl_graph.frontends.inspect.explorer_stages import build_bundle, build_stages, write_bundle
from lbdl_graph.frontends.inspect.scopes import node_scope, scope_path

from .models import attention_block, mlp


def _by_id(g: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in g["nodes"]}


def _attrs(node: dict[str, Any]) -> dict[str, str]:
    return {kv["key"]: kv["value"] for kv in node["attrs"]}


def test_namespaces_are_scope_paths_and_gpt_opens_as_its_layers() -> None:
    g = zoo.get("gpt_tiny").trace()
    me = me_graph(g, "g")
    nodes = _by_id(me)
    for n in g.nodes:
        assert nodes[n.name]["namespace"] == scope_path(node_scope(n))
    assert nodes["layers.0.attn/matmul"]["namespace"] == "layers.0/attn"
    top = {n["namespace"].split("/")[0] for n in me["nodes"]}
    assert {"tok_emb", "pos_emb", "layers.0", "layers.1", "ln_f", "head"} <= top
    # parameters sit in the scope that reads them, not at the top level
    assert nodes[param_id("layers.0.attn.in_proj_weight")]["namespace"] == "layers.0/attn"
    assert nodes[param_id("layers.1.mlp.fc1.weight")]["namespace"] == "layers.1/mlp/fc1"
    # the output node sits beside its producer
    out = nodes[output_id(g.outputs[0].name)]
    src = out["incomingEdges"][0]["sourceNodeId"]
    assert out["namespace"] == nodes[src]["namespace"]


def test_edges_follow_every_input_slot() -> None:
    g = mlp((8, 4, 3))
    me = me_graph(g, "g")
    nodes = _by_id(me)
    assert len(me["nodes"]) == len(g.nodes) + len(g.inputs) + len(g.params) + len(g.outputs)
    producer = {v: (n.name, k) for n in g.nodes for k, v in enumerate(n.outputs)}
    producer.update({v: (input_id(v.name), 0) for v in g.inputs})
    producer.update({p.value: (param_id(p.name), 0) for p in g.params})
    for n in g.nodes:
        edges = nodes[n.name]["incomingEdges"]
        assert [(e["sourceNodeId"], int(e["sourceNodeOutputId"]), int(e["targetNodeInputId"]))
                for e in edges] == [(*producer[v], i) for i, v in enumerate(n.inputs)
                                    if v is not None]
    ids = set(nodes)
    assert all(e["sourceNodeId"] in ids for n in me["nodes"] for e in n["incomingEdges"])


def test_node_attributes_name_op_types_source_and_origin() -> None:
    g = attention_block(layers=1)
    node = next(n for n in g.nodes if n.op.name == "matmul")
    me = _by_id(me_graph(g, "g", rules={node.name: "fuse_linear:linear"}))
    a = _attrs(me[node.name])
    assert a["op"] == "matmul"
    assert a["inputs"] == ", ".join(str(v.type) for v in node.inputs if v is not None)
    assert a["outputs"] == str(node.outputs[0].type)
    assert a["origin"] == "fuse_linear:linear"  # empty Node.origin: the pass manager's name
    if node.source is not None:
        assert f":{node.source.line}" in a["source"]
    meta = me[node.name]["outputsMetadata"][0]
    assert {kv["key"]: kv["value"] for kv in meta["attrs"]} == {
        "tensor_name": node.outputs[0].name, "shape": str(node.outputs[0].type)}


def test_node_origin_field_wins_over_the_pass_table() -> None:
    from dataclasses import replace

    g = mlp((4, 3))
    n0 = replace(g.nodes[0], origin="fuse_linear:matmul_add")
    g = g.replace(nodes=[n0, *g.nodes[1:]])
    a = _attrs(_by_id(me_graph(g, "g", rules={n0.name: "simplify"}))[n0.name])
    assert a["origin"] == "fuse_linear:matmul_add"


def test_attributes_are_printed_readably() -> None:
    assert fmt_attr((1, 2)) == "(1, 2)"
    assert fmt_attr((3,)) == "(3,)"
    assert fmt_attr(0.5) == "0.5"
    assert fmt_attr(np.array([1.0, 0.1], np.float32)) == "float32[2] [1, 0.1]"
    assert fmt_attr(np.array([[1, 2]], np.int64)) == "int64[1, 2] [1, 2]"
    assert fmt_attr(np.zeros((64, 64))) == "float64[64, 64]"
    with GraphBuilder("c") as b:
        x = b.input("x", "f32", (2, 3))
        y = ops.transpose(x, perm=(1, 0))
        g = b.build([y])
    assert _attrs(me_graph(g, "g")["nodes"][-2])["perm"] == "(1, 0)"


def test_group_attributes_carry_scope_totals() -> None:
    g = zoo.get("gpt_tiny").trace()
    groups = me_graph(g, "g", bindings={"N": 1, "T": 4})["groupNodeAttributes"]
    layer = groups["layers.0"]
    total_params = sum(p.data.size for p in g.params if p.name.startswith("layers.0."))
    assert layer["parameters"] == f"{total_params:,}"
    assert groups[""]["nodes"] == f"{len(g.nodes):,}"


def test_training_step_state_inputs_live_with_their_readers() -> None:
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    entry = zoo.get("mlp_tiny")
    fwd = trace_loss(entry.model(), dict(entry.inputs), InputSpec(("N",), "int64"),
                     "cross_entropy", {}, training=True)
    step = make_train_step(fwd, Adam())
    me = _by_id(me_graph(step.graph, "s", trainable=step.info.params))
    for w in step.info.state:
        node = me[input_id(w)]
        if w in step.info.params:
            assert _attrs(node)["op"] == "parameter (state input)"
        readers = step.graph.consumers.get(step.graph.input(w), ())
        if readers and any(node_scope(r) for r in readers):
            assert node["namespace"] != "", w  # beside its readers, not at the top level


@pytest.mark.parametrize(("name", "output", "scope"), [
    ("layers.0.attn/linear", "", "layers.0/attn"),
    ("/encoder/layer.0/attention/MatMul", "", "encoder/layer.0/attention"),
    ("MatMulAddFusion_3", "layers.1.mlp.fc1/linear", "layers.1/mlp/fc1"),
    ("Gemm_0", "y", ""),
])
def test_onnx_scopes_come_from_node_or_tensor_names(name: str, output: str, scope: str) -> None:
    assert onnx_scope(name, output) == scope


def test_onnx_model_converts_with_scopes_and_initializers() -> None:
    from lbdl_graph.backends.onnx import to_onnx

    g = zoo.get("gpt_tiny").trace()
    model = to_onnx(g, training=False)
    me = onnx_me_graph(model, "ort")
    nodes = _by_id(me)
    first = model.graph.node[0]
    assert nodes[first.name]["label"] == first.op_type
    assert nodes[first.name]["namespace"] == onnx_scope(first.name)
    inits = {t.name for t in model.graph.initializer}
    assert {param_id(t) for t in inits} <= set(nodes)
    ids = set(nodes)
    assert all(e["sourceNodeId"] in ids for n in me["nodes"] for e in n["incomingEdges"])
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    assert nodes[ln.name]["namespace"] == "layers.0/ln1"


def _schema() -> Any:
    pytest.importorskip("dacite")
    pytest.importorskip("model_explorer")
    import dacite
    from model_explorer import graph_builder, node_data_builder

    return dacite, graph_builder, node_data_builder


def test_out_files_load_as_model_explorer_data(tmp_path: Path) -> None:
    dacite, gb, ndb = _schema()
    g = zoo.get("gpt_tiny").trace()
    bundle = build_bundle("gpt_tiny", build_stages(g, "O2", compare="O0"), compare="O0")
    files = write_bundle(bundle, tmp_path / "out")
    assert files[0].name == "gpt_tiny.json"
    coll = json.loads(files[0].read_text())
    strict = dacite.Config(strict=True)
    loose = dacite.Config(strict=True, check_types=False)  # diff marks are text values
    parsed = dacite.from_dict(gb.GraphCollection, coll, config=strict)
    assert [x.id for x in parsed.graphs] == [s.id for s in bundle.stages]
    assert [x.id for x in parsed.graphs] == sorted(x.id for x in parsed.graphs)
    assert len(files) == 1 + len(bundle.overlays)
    for f, (label, _) in zip(files[1:], bundle.overlays, strict=True):
        data = json.loads(f.read_text())
        assert data, f
        for gid, gd in data.items():
            assert gid in {s.id for s in bundle.stages}
            text = label.startswith(("diff", "pass diff"))
            parsed_nd = dacite.from_dict(ndb.GraphNodeData, gd, config=loose if text else strict)
            assert parsed_nd.name == label
            for r in parsed_nd.results.values():
                assert isinstance(r.value, str if text else (int, float))
                assert not text or r.bgColor
            assert set(parsed_nd.results) <= {n["id"] for x in coll["graphs"]
                                              if x["id"] == gid for n in x["nodes"]}


def test_explore_out_with_a_training_step_from_a_loss_graph(tmp_path: Path) -> None:
    from lbdl_graph.frontends.inspect import ExplorerError, explore
    from lbdl_graph.frontends.training.trainer import trace_loss

    entry = zoo.get("mlp_tiny")
    fwd = trace_loss(entry.model(), dict(entry.inputs), InputSpec(("N",), "int64"),
                     "cross_entropy", {}, training=True)
    files = explore(fwd, train=True, out=tmp_path / "x", onnx=False)
    assert isinstance(files, list)
    ids = [g["id"] for g in json.loads(files[0].read_text())["graphs"]]
    assert ids[-1].endswith("train step")
    with pytest.raises(ExplorerError, match="'loss' output"):
        explore(entry.trace(), train=True, out=tmp_path / "y")
    assert not (tmp_path / "y").exists()
