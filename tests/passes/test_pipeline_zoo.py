"""The whole O2/O3 pipeline on the model zoo: semantics and the fused nodes it should produce.

Every test-size zoo model (evaluation mode) goes through O2 and O3 with the translation check
on, so the NumPy interpreter runs the graph before and after every pass that changed it. The
fused-node counts of LeNet, the tiny ResNets and the GPTs are derived from their configs (what
the architecture implies), and a few models also run on ONNX Runtime after export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from lbdl_graph import ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.zoo import ZOO, names
from lbdl_graph.graph import Graph
from lbdl_graph.passes.manager import run_passes

FUSED = ("linear", "fused_conv", "attention", "layer_norm", "gelu", "fused_elementwise")


def _traced(name: str) -> tuple[Graph, dict[str, np.ndarray]]:
    manual_seed(0)
    entry = ZOO[name]
    return entry.trace(), entry.example_inputs()


def _eval(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Interpreter(graph, training=False).run(feeds)


def _close(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray],
           tol: float = 1e-4) -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        g = np.asarray(got[k])
        assert g.dtype == w.dtype and g.shape == w.shape, k
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=k)
        else:
            np.testing.assert_array_equal(g, w, err_msg=k)


def _fused(graph: Graph) -> dict[str, int]:
    counts = graph.op_counts()
    return {op: counts.get(op, 0) for op in FUSED}


def _activations(graph: Graph) -> list[str]:
    return [n.attrs["activation"] for n in graph.nodes if n.op in (ops.linear, ops.fused_conv)]


@pytest.mark.parametrize("name", names(tiny=True))
@pytest.mark.parametrize("level", ["O2", "O3"])
def test_pipeline_preserves_semantics(name: str, level: str) -> None:
    g, feeds = _traced(name)
    # the translation check runs both graphs after every pass that changed something
    r = run_passes(g, level, check_translation=_eval, inputs=feeds)
    assert len(r.graph.nodes) < len(g.nodes)
    _close(_eval(r.graph, feeds), _eval(g, feeds))
    # a second run finds nothing left to do
    assert not run_passes(r.graph, level).changed


def test_lenet_fusions() -> None:
    g, _ = _traced("lenet")
    c = ZOO["lenet"].config
    after = run_passes(g, "O2").graph
    layers = len(c.hidden) + 1
    # conv -> max_pool -> relu: the relu does not follow the conv, so no fused_conv
    assert _fused(after) == {**dict.fromkeys(FUSED, 0), "linear": layers}
    assert after.op_counts()["conv"] == len(c.channels)
    assert _activations(after) == ["relu"] * (layers - 1) + ["none"]
    assert "matmul" not in after.op_counts() and "add" not in after.op_counts()


@pytest.mark.parametrize("name", ["resnet_tiny", "resnet_tiny_bottleneck"])
def test_resnet_fusions(name: str) -> None:
    g, _ = _traced(name)
    c = ZOO[name].config
    after = run_passes(g, "O2").graph
    blocks = sum(c.layers)
    per_block, expansion = (2, 1) if c.block == "basic" else (3, 4)
    shortcuts, cin = 0, c.stem_width  # blocks that change the shape have a conv shortcut
    for i, (n, width) in enumerate(zip(c.layers, c.widths, strict=True)):
        for j in range(n):
            shortcuts += (i > 0 and j == 0) or cin != width * expansion
            cin = width * expansion
    # stem conv-BN-ReLU, every conv-BN(-ReLU) of a block; the block's last conv also takes
    # the residual add; the shortcut convs keep their (folded) BatchNorm as a plain conv
    assert _fused(after) == {**dict.fromkeys(FUSED, 0), "fused_conv": 1 + per_block * blocks,
                             "linear": 1}
    counts = after.op_counts()
    assert counts["conv"] == shortcuts and "batch_norm" not in counts and "relu" not in counts
    residual = [n for n in after.nodes if n.op is ops.fused_conv and len(n.inputs) == 4
                and n.inputs[3] is not None]
    assert len(residual) == blocks
    assert _activations(after) == ["relu"] * (1 + per_block * blocks) + ["none"]


@pytest.mark.parametrize("name", ["gpt_mini", "gpt_tiny"])
def test_gpt_fusions(name: str) -> None:
    g, _ = _traced(name)
    c = ZOO[name].config
    after = run_passes(g, "O2").graph
    n = c.num_layers
    # per block: ln1, ln2, causal attention, qkv / out / fc1 (+GELU) / fc2 linears; ln_f;
    # the head has no bias: a plain matmul
    assert _fused(after) == {**dict.fromkeys(FUSED, 0), "attention": n, "layer_norm": 2 * n + 1,
                             "linear": 4 * n}
    attention = [x for x in after.nodes if x.op is ops.attention]
    assert all(x.attrs["causal"] and x.inputs[3:] in ((), (None,)) for x in attention)
    gelu = c.activation
    assert _activations(after).count(gelu) == n
    counts = after.op_counts()
    assert not {"softmax", "where", "less_equal", "gelu"} & set(counts)
    assert counts["iota_like"] == 1  # the positions of the positional embedding
    assert counts["matmul"] == 1


ORT_MODELS = ["lenet", "resnet_tiny", "gpt_mini", "transformer_tiny"]


@pytest.mark.parametrize("name", ORT_MODELS)
@pytest.mark.parametrize("opset", [21, 23])
def test_o2_export_runs_on_onnx_runtime(name: str, opset: int) -> None:
    g, feeds = _traced(name)
    after = run_passes(g, "O2").graph
    got = OrtRunner(after, providers="cpu", opset=opset, training=False).run(feeds)
    _close(got, _eval(g, feeds))


def test_gpt_attention_uses_the_standard_operator_from_opset_23() -> None:
    g, _ = _traced("gpt_mini")
    after = run_passes(g, "O2").graph

    def kinds(opset: int) -> dict[str, Any]:
        m = to_onnx(after, opset=opset, training=False)
        out: dict[str, int] = {}
        for node in m.graph.node:
            out[node.op_type] = out.get(node.op_type, 0) + 1
        return out

    new, old = kinds(23), kinds(21)
    n = ZOO["gpt_mini"].config.num_layers
    assert new.get("Attention") == n and "Softmax" not in new
    assert "Attention" not in old and old["Softmax"] == n
    assert new["LayerNormalization"] == old["LayerNormalization"] == 2 * n + 1
    assert new["Gelu"] == old["Gelu"] == n
