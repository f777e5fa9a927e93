"""summary(): parameter counts, MACs, layer grouping, sizes, table and JSON forms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.frontends.inspect import node_macs, register_macs, summary
from lbdl_graph.frontends.inspect.common import eval_dim, module_of
from lbdl_graph.frontends.inspect.summary import MAC_RULES
from lbdl_graph.opdef import OpDef

from .models import attention_block, lenet, mlp

MLP_PARAMS = 784 * 256 + 256 + 256 * 10 + 10


def test_mlp_params_and_macs() -> None:
    s = summary(mlp(), bindings={"N": 32})
    assert s.total_params == s.trainable_params == MLP_PARAMS
    assert s.non_trainable_params == 0
    assert s.total_macs == 32 * (784 * 256 + 256 * 10)
    assert [r.name for r in s.rows] == ["fc1", "fc2"]
    fc1 = s.row("fc1")
    assert fc1.params == 784 * 256 + 256 and fc1.macs == 32 * 784 * 256
    assert fc1.ops == ("matmul", "add", "relu") and fc1.output == "f32[N,256]"
    assert s.param_bytes == 4 * MLP_PARAMS
    assert s.input_bytes == 32 * 784 * 4
    assert s.bindings == {"N": 32}


def test_unbound_symbols_default_to_one() -> None:
    s = summary(mlp())
    assert s.bindings == {"N": 1}
    assert s.total_macs == 784 * 256 + 256 * 10


def test_by_node_rows_and_each_param_counted_once() -> None:
    s = summary(mlp(), by="node")
    assert [r.name for r in s.rows] == ["fc1/matmul", "fc1/add", "fc1/relu", "fc2/matmul",
                                        "fc2/add"]
    assert [r.params for r in s.rows] == [784 * 256, 256, 0, 256 * 10, 10]
    assert sum(r.params for r in s.rows) == s.total_params
    with pytest.raises(ValueError, match="by must be"):
        summary(mlp(), by="module")  # type: ignore[arg-type]


def test_lenet_conv_macs() -> None:
    s = summary(lenet(), bindings={"N": 2})
    assert s.row("conv1").macs == 2 * 6 * 28 * 28 * 1 * 5 * 5
    assert s.row("conv2").macs == 2 * 16 * 10 * 10 * 6 * 5 * 5
    assert s.row("conv1").output == "f32[N,6,28,28]"
    assert s.row("pool1").output == "f32[N,6,14,14]"  # the unused indices do not leave
    assert s.row("pool1").macs == 0
    assert s.total_params == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (
        120 * 84 + 84) + (84 * 10 + 10)
    # unscoped nodes are rows of their own
    assert {"relu", "relu_1", "reshape"} <= {r.name for r in s.rows}


def test_layer_grouping_by_module_path_and_depth() -> None:
    g = attention_block(layers=2)
    assert module_of("layers.0.attn.q_proj/matmul") == "layers.0.attn.q_proj"
    assert module_of("relu") == ""
    names = [r.name for r in summary(g).rows]
    assert names[:6] == ["layers.0.ln1", "layers.0.attn.q_proj", "layers.0.attn.k_proj",
                         "layers.0.attn.v_proj", "layers.0.attn", "layers.0.attn.o_proj"]
    assert "layers.1.mlp.fc2" in names
    top = summary(g, depth=2)
    assert [r.name for r in top.rows] == ["layers.0", "layers.1"]
    assert top.total_macs == summary(g).total_macs
    assert sum(r.params for r in top.rows) == g.num_params()


def test_attention_macs() -> None:
    d, h, t = 16, 2, 8
    s = summary(attention_block(d=d, heads=h, t=t), bindings={"N": 3})
    n = 3
    assert s.row("layers.0.attn.q_proj").macs == n * t * d * d
    # q @ k^T and p @ v: n*h*t*t outputs, contracted over d/h; softmax sums n*h*t*t inputs
    assert s.row("layers.0.attn").macs == 2 * n * h * t * t * (d // h) + n * h * t * t
    assert s.row("layers.0.ln1").macs == 3 * n * t * d
    assert s.row("layers.0.mlp.fc1").macs == n * t * d * 4 * d


def test_tied_and_frozen_parameters() -> None:
    with GraphBuilder("tied") as b:
        x = b.input("x", "f32", ("N", 8))
        w = b.param("shared.weight", np.ones((8, 8), np.float32))
        stats = b.param("stats", np.ones((8,), np.float32), trainable=False)
        with b.scope("a"):
            y = ops.matmul(x, w)
        with b.scope("b"):
            y = ops.add(ops.matmul(y, w), stats)
        g = b.build([y])
    s = summary(g)
    assert s.row("a").params == 64 and s.row("b").params == 8
    assert s.total_params == 72
    assert s.trainable_params == 64 and s.non_trainable_params == 8
    assert s.row("b").trainable_params == 0


def test_sizes_follow_dtype_width() -> None:
    with GraphBuilder("q") as b:
        x = b.input("x", "i8", ("N", 16))
        w = b.param("w", np.zeros((16, 4), np.int8))
        g = b.build([ops.matmul(x, w)])
    s = summary(g, bindings={"N": 10})
    assert s.param_bytes == 64 and s.input_bytes == 160 and s.activation_bytes == 40


def test_peak_activation_bytes() -> None:
    with GraphBuilder("peak") as b:
        x = b.input("x", "f32", (100,))
        a = ops.relu(x)  # 400 B
        c = ops.tanh(a)  # a and c live: 800 B
        d = ops.exp(c)  # a dead after tanh: c and d live: 800 B
        g = b.build([d])
    s = summary(g)
    assert s.activation_bytes == 1200
    assert s.peak_activation_bytes == 800


def test_symbolic_dim_expressions() -> None:
    assert eval_dim("(H-3)//2+1", {"H": 9}) == 4
    assert eval_dim("N*4", {"N": 3}) == 12
    assert eval_dim("T+2") == 3
    assert eval_dim("N-5", {"N": 1}) == 0  # never negative
    assert eval_dim(7) == 7


def test_custom_mac_rule_and_name_guess() -> None:
    fused = OpDef("fused_linear_relu", ("x", "w", "b"),
                  infer=lambda x, w, b: ops.matmul.infer(x, w))
    gemmish = OpDef("my_gemm", ("a", "b"), infer=lambda a, b: ops.matmul.infer(a, b))
    with GraphBuilder("custom") as b:
        x = b.input("x", "f32", (5, 6))
        w = b.param("w", np.zeros((6, 7), np.float32))
        bias = b.param("b", np.zeros((7,), np.float32))
        (y,) = b.add_node(fused, [x, w, bias], {})
        (z,) = b.add_node(gemmish, [x, w], {})
        g = b.build([y, z], verify=False)
    assert node_macs(g.nodes[0]) == 5 * 7 * 6  # "linear" in the name: matmul rule
    assert node_macs(g.nodes[1]) == 5 * 7 * 6
    try:
        register_macs("my_gemm")(lambda node, bindings: 1)
        assert node_macs(g.nodes[1]) == 1
    finally:
        MAC_RULES.pop("my_gemm", None)


def test_table_and_json() -> None:
    s = summary(mlp(), bindings={"N": 4})
    text = str(s)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Layer"))
    rows = lines[header + 2: header + 4]
    assert rows[0].startswith("fc1") and rows[1].startswith("fc2")
    # numbers are right-aligned in the same columns
    assert rows[0].rstrip().endswith(f"{4 * 784 * 256:,}")
    assert len(rows[0].rstrip()) == len(rows[1].rstrip()) == len(lines[header].rstrip())
    assert f"Total params: {MLP_PARAMS:,}" in text and "Params size (MB): 0.81" in text
    d = json.loads(json.dumps(s.to_dict()))
    assert d["totals"]["params"] == MLP_PARAMS and d["bindings"] == {"N": 4}
    assert d["rows"][0]["ops"] == ["matmul", "add", "relu"]
    assert d["rows"][1]["macs"] == 4 * 2560


def test_attention_rule_matches_its_decomposition() -> None:
    def infer(q, k, v):  # type: ignore[no-untyped-def]
        return q.with_shape((*q.shape[:-1], v.shape[-1]))

    attention = OpDef("attention", ("q", "k", "v"), infer=infer)
    with GraphBuilder("attn") as b:
        q = b.input("q", "f32", ("N", 2, 5, 8))
        k = b.input("k", "f32", ("N", 2, 7, 8))
        v = b.input("v", "f32", ("N", 2, 7, 3))
        (fused,) = b.add_node(attention, [q, k, v], {})
        s = ops.softmax(ops.matmul(q, ops.transpose(k, perm=(0, 1, 3, 2))))
        g = b.build([fused, ops.matmul(s, v)], verify=False)
    n = 4
    decomposed = sum(node_macs(x, {"N": n}) for x in g.nodes[1:])
    assert decomposed == n * 2 * 5 * 7 * 8 + n * 2 * 5 * 7 + n * 2 * 5 * 3 * 7
    assert node_macs(g.nodes[0], {"N": n}) == decomposed


def test_weights_computed_from_params_are_not_activations() -> None:
    with GraphBuilder("t") as b:
        x = b.input("x", "f32", ("N", 16))
        w = b.param("w", np.zeros((4, 16), np.float32))
        wt = ops.transpose(w, perm=(1, 0))  # 256 B, the same on every run
        g = b.build([ops.relu(ops.matmul(x, wt))])
    s = summary(g, bindings={"N": 2})
    assert s.activation_bytes == 2 * (2 * 4 * 4)  # matmul and relu outputs
    assert s.param_derived_bytes == 16 * 4 * 4
    assert s.peak_activation_bytes == 2 * 2 * 4 * 4
    assert s.total_bytes == s.input_bytes + s.activation_bytes + s.param_bytes
    assert "Derived from params (MB): 0.00" in str(s)
    assert s.to_dict()["totals"]["param_derived_bytes"] == 256


@pytest.mark.parametrize("name", ["gpt_tiny", "gpt_mini"])
def test_gpt_forward_memory_at_one_token_counts_activations_only(name: str) -> None:
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.zoo import ZOO
    from lbdl_graph.passes.fold_parameters import fold_params

    manual_seed(0)
    entry = ZOO[name]
    c = entry.config
    g = entry.trace()
    one = {"N": 1, "T": 1}
    s = summary(g, bindings=one)
    # with one token no node output is wider than the vocabulary, the fused qkv or the MLP
    widest = 4 * max(c.vocab_size, 3 * c.d_model, c.d_ff or 4 * c.d_model)
    assert 4 * c.vocab_size <= s.activation_bytes <= len(g.nodes) * widest < s.param_bytes
    assert s.peak_activation_bytes <= s.activation_bytes
    # every transposed weight is derived from the parameters
    transposed = [g.param_of(n.inputs[0]) for n in g.nodes if n.op is ops.transpose
                  and n.inputs[0] is not None and g.param_of(n.inputs[0]) is not None]
    assert transposed
    assert s.param_derived_bytes >= sum(p.data.nbytes for p in transposed if p is not None)
    folded = summary(fold_params(g).graph, bindings=one)
    assert folded.activation_bytes == s.activation_bytes
    assert folded.param_derived_bytes < 4 * c.context * c.context  # at most the causal mask
