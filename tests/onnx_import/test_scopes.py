"""Scopes of imported ONNX nodes: our metadata, torch's dynamo metadata, TorchScript names."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from onnx import StringStringEntryProto, TensorProto, helper

from lbdl_graph.frontends.onnx import import_onnx
from lbdl_graph.frontends.onnx.scopes import (
    node_origin,
    node_scope,
    scope_from_name_scopes,
    scope_from_node_name,
)
from tests.onnx_import.common import F32, model


@pytest.mark.parametrize(("name", "want"), [
    ("/encoder/layer.0/attention/self/MatMul", "encoder.layer.0.attention.self"),
    ("/encoder/layer.0/attention/self/MatMul_1", "encoder.layer.0.attention.self"),
    ("/MatMul", ""), ("/0/Gemm", "0"), ("MatMul_3", ""), ("h.0.attn/matmul", ""), ("", ""),
    ("//a//b/Add", "a.b"),
])
def test_scope_from_torchscript_node_name(name: str, want: str) -> None:
    assert scope_from_node_name(name) == want


@pytest.mark.parametrize(("text", "want"), [
    ("['', 'attn', 'attn.q', 'linear']", "attn.q"),  # as torch 2.13's dynamo exporter writes
    ("['', 'add']", ""), ('["", "h.0", "h.0.mlp", "gelu"]', "h.0.mlp"), ("[]", ""),
    ("not a list", None), ("{'a': 1}", None), ("[1, 2]", None), ("__import__('os')", None),
])
def test_scope_from_dynamo_name_scopes(text: str, want: str | None) -> None:
    assert scope_from_name_scopes(text) == want


def _node(name: str, **props: str) -> object:
    n = helper.make_node("Relu", ["x"], ["y"], name=name)
    n.metadata_props.extend(StringStringEntryProto(key=k.replace("_", "."), value=v)
                            for k, v in props.items())
    return n


def test_metadata_sources_in_order() -> None:
    ours = _node("/a/b/Relu", lbdl_scope="h.0.attn", lbdl_origin="fuse_attention:attention")
    assert (node_scope(ours), node_origin(ours)) == ("h.0.attn", "fuse_attention:attention")
    top = _node("/a/b/Relu", lbdl_node="relu")  # ours, exported at top level
    assert (node_scope(top), node_origin(top)) == ("", "")
    dyn = helper.make_node("Relu", ["x"], ["y"], name="node_relu")
    dyn.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'h.1', 'h.1.act', 'r']")
    assert node_scope(dyn) == "h.1.act"
    broken = helper.make_node("Relu", ["x"], ["y"], name="/enc/act/Relu")
    broken.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="[[garbage")
    assert node_scope(broken) == "enc.act"  # falls back to the node name
    assert node_scope(_node("/x/Relu", lbdl_scope="a\nb c")) == "a_b_c"  # one printable word


def test_imported_nodes_take_their_scopes() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="/enc/layer.0/act/Relu"),
             helper.make_node("Mul", ["r", "two"], ["m"], name="/enc/layer.0/Mul"),
             helper.make_node("Softmax", ["m"], ["y"], name="/Softmax", axis=-1)]
    nodes[1].metadata_props.add(key="pkg.torch.onnx.name_scopes",
                                value="['', 'enc', 'enc.layer.0.scale', 'mul']")
    m = model(nodes, {"x": (F32, ("N", 4))}, ["y"], inits={"two": np.float32(2.0)})
    g = import_onnx(m)
    assert [(n.op.name, n.scope) for n in g.nodes if n.op.name != "constant"] == [
        ("relu", "enc.layer.0.act"), ("mul", "enc.layer.0.scale"), ("softmax", "")]
    assert all(n.origin == "" for n in g.nodes)


def test_function_body_nodes_inherit_the_scope() -> None:
    # SoftmaxCrossEntropyLoss has no handler: the importer expands its function body
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["y"],
                            name="/head/loss/SoftmaxCrossEntropyLoss", reduction="mean")
    g = import_onnx(model([node], {"x": (F32, (2, 3)), "t": (TensorProto.INT64, (2,))}, ["y"]))
    assert len(g.nodes) > 2 and {n.scope for n in g.nodes} == {"head.loss"}


def test_torchscript_export_scopes() -> None:
    torch = pytest.importorskip("torch")

    class Inner(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.q = torch.nn.Linear(8, 8)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.relu(self.q(x))

    class Outer(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.attn = Inner()
            self.layers = torch.nn.ModuleList([Inner(), Inner()])

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = self.attn(x)
            for layer in self.layers:
                x = layer(x) + x
            return x

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Outer().eval(), (torch.randn(2, 8),), f, dynamo=False,
                          opset_version=17, input_names=["x"])
    g = import_onnx(f.getvalue())
    got = {(n.op.name, n.scope) for n in g.nodes if n.op.name in ("relu", "linear", "matmul",
                                                                  "gemm", "add")}
    assert {("relu", "attn"), ("relu", "layers.0"), ("relu", "layers.1")} <= got
    assert {s for _, s in got} >= {"attn.q", "layers.0.q", "layers.1.q", ""}


def test_dynamo_export_scopes() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class Net(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

        def forward(self, x):  # type: ignore[no-untyped-def]
            for blk in self.blocks:
                x = torch.tanh(blk(x))
            return x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(Net().eval(), (torch.randn(2, 4),), dynamo=True, verbose=False)
    m = prog.model_proto
    m.ir_version = min(m.ir_version, 10)
    g = import_onnx(m)
    scopes = {n.scope for n in g.nodes}
    assert {"blocks.0", "blocks.1"} <= scopes


def test_non_utf8_scope_metadata_from_a_corrupt_file_still_imports() -> None:
    from onnx import TensorProto, helper

    from lbdl_graph.frontends.onnx import import_onnx

    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    node.metadata_props.add(key="lbdl.scope", value="zqzqzq")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    raw = m.SerializeToString().replace(b"zqzqzq", b"\xff\xfe\xfdab\xfc")
    (n,) = import_onnx(raw).nodes
    assert n.op.name == "relu" and n.scope.startswith("\ufffd")
