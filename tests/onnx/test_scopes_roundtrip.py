"""Export writes Node.scope / Node.origin as node metadata; importing the file gives them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lbdl_graph import Graph, GraphBuilder, ops
from lbdl_graph.backends.onnx import save_onnx, to_onnx
from lbdl_graph.frontends import manual_seed, zoo
from lbdl_graph.frontends.onnx import import_onnx
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.manager import run_passes


def _props(n: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in n.metadata_props}


def _check_round_trip(g: Graph, model: onnx.ModelProto) -> Graph:
    """Import ``model`` and check every node named like one of ``g``'s has its scope and origin,
    and that the others (helpers of a lowering) carry tags that ``g`` has."""
    back = import_onnx(model)
    src = {n.name: n for n in g.nodes}
    same = [n for n in back.nodes if n.name in src]
    assert len(same) >= len(g.nodes) // 2
    for n in same:
        assert (n.scope, n.origin) == (src[n.name].scope, src[n.name].origin), n.name
    tags = {(n.scope, n.origin) for n in g.nodes} | {("", "")}
    assert {(n.scope, n.origin) for n in back.nodes} <= tags
    return back


@pytest.fixture(scope="module")
def gpt_o2() -> Graph:
    manual_seed(0)
    return run_passes(zoo.get("gpt_tiny").trace(), "O2").graph


def test_export_writes_scope_and_origin_metadata(gpt_o2: Graph) -> None:
    m = to_onnx(gpt_o2)
    assert 10 <= m.ir_version <= 13  # node metadata_props need IR 10; ORT 1.31 reads <= 13
    onnx.checker.check_model(m, full_check=True)
    ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    by_node = {}
    for n in m.graph.node:
        p = _props(n)
        by_node.setdefault(p["lbdl.node"], []).append(p)
    ir = {n.name: n for n in gpt_o2.nodes}
    att = next(n for n in gpt_o2.nodes if n.op is ops.attention)
    assert all(p["lbdl.scope"] == "layers.0.attn" and p["lbdl.origin"] == att.origin
               for p in by_node[att.name])
    for name, props in by_node.items():
        for p in props:
            assert p.get("lbdl.scope", "") == ir[name].scope
            assert p.get("lbdl.origin", "") == ir[name].origin


def test_gpt_scopes_survive_export_and_import(gpt_o2: Graph, tmp_path: Path) -> None:
    back = _check_round_trip(gpt_o2, to_onnx(gpt_o2))
    # attention lowers to several ONNX nodes (opset 21): each comes back with the fused scope
    fused = [n for n in back.nodes if n.origin.startswith("fuse_attention:")]
    assert len(fused) > 4 and {n.scope for n in fused} == {"layers.0.attn", "layers.1.attn"}
    path = tmp_path / "gpt.onnx"
    save_onnx(gpt_o2, path)
    again = import_onnx(path)
    assert {(n.scope, n.origin) for n in again.nodes} == {(n.scope, n.origin)
                                                         for n in back.nodes}


def test_gradient_scopes_survive_export_and_import() -> None:
    rng = np.random.default_rng(0)
    with GraphBuilder("mlp") as b:
        x = b.input("x", "f32", ("N", 4))
        h = x
        for i in range(2):
            with b.scope(f"layers.{i}"):
                w = b.param(f"layers.{i}.w", rng.standard_normal((4, 4)).astype(np.float32))
                h = ops.tanh(ops.matmul(h, w))
        g = grad(b.build({"loss": ops.reduce_mean(h, axes=None, keepdims=False)}), "loss")
    assert {"grad/layers.0", "grad/layers.1"} <= {n.scope for n in g.nodes}
    m = to_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    loss = next(n for n in m.graph.node if _props(n)["lbdl.op"] == "reduce_mean")
    assert "lbdl.scope" not in _props(loss) and "lbdl.origin" not in _props(loss)  # top level
    back = _check_round_trip(g, m)
    assert {"layers.0", "grad/layers.0", "grad/layers.1"} <= {n.scope for n in back.nodes}
    assert any(n.origin == "autodiff:tanh" for n in back.nodes)
