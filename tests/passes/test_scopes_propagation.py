"""Node.scope and Node.origin survive the passes: fusion, cleanup, autodiff, train step, remat."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest

from lbdl_graph import Graph, GraphBuilder, ops
from lbdl_graph.frontends import F, InputSpec, Module, manual_seed, nn, trace, zoo
from lbdl_graph.graph import common_scope
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.eliminate_common_subexpressions import eliminate_common_subexpressions
from lbdl_graph.passes.fold_constants import fold_constants
from lbdl_graph.passes.lora import add_lora
from lbdl_graph.passes.manager import run_passes
from lbdl_graph.passes.optim import SGD, Adam
from lbdl_graph.passes.quant import quantize_weights
from lbdl_graph.passes.remat import rematerialize
from lbdl_graph.passes.train_step import make_train_step


def _inside(scope: str, traced: Iterable[str]) -> bool:
    """True if ``scope`` is "" or a prefix path (whole segments) of a traced scope."""
    return scope == "" or any(t == scope or t.startswith(scope + ".") for t in traced)


@pytest.mark.parametrize(("scopes", "want"), [
    (["h.0.attn", "h.0.mlp"], "h.0"), (["h.1", "h.10"], "h"), (["h.0.attn"], "h.0.attn"),
    (["a.b", ""], ""), ([], ""), (["grad/h.0.attn", "grad/h.0.mlp"], "grad/h.0"),
    (["grad/h.0", "h.0"], ""), (["grad/x", "grad"], "grad"), (["ab", "ac"], ""),
])
def test_common_scope_is_segment_wise(scopes: list[str], want: str) -> None:
    assert common_scope(scopes) == want


@pytest.fixture(scope="module")
def gpt() -> Graph:
    manual_seed(0)
    return zoo.get("gpt_tiny").trace()


def test_traced_nodes_carry_module_scopes(gpt: Graph) -> None:
    scopes = {n.scope for n in gpt.nodes}
    assert {"layers.0.attn", "layers.1.mlp.fc1", "ln_f", "tok_emb"} <= scopes
    assert all(n.origin == "" for n in gpt.nodes)


def test_o2_keeps_scopes_and_names_the_fusing_pass(gpt: Graph) -> None:
    traced = {n.scope for n in gpt.nodes}
    g = run_passes(gpt, "O2").graph
    assert all(_inside(n.scope, traced) for n in g.nodes), \
        [(n.name, n.scope) for n in g.nodes if not _inside(n.scope, traced)]
    att = [n for n in g.nodes if n.op is ops.attention]
    assert [n.scope for n in att] == ["layers.0.attn", "layers.1.attn"]
    assert all(n.origin.startswith("fuse_attention:attention") for n in att)
    # linear + gelu: the matmul is in mlp.fc1 and the gelu in mlp.act -> their common scope
    lin_gelu = [n for n in g.nodes if n.op is ops.linear and n.attrs["activation"] == "gelu"]
    assert [(n.scope, n.origin) for n in lin_gelu] == [
        ("layers.0.mlp", "fuse_linear:linear_gelu"), ("layers.1.mlp", "fuse_linear:linear_gelu")]
    untouched = {n.name: n for n in gpt.nodes}
    for n in g.nodes:
        if n.name in untouched and n.op is untouched[n.name].op and not n.origin:
            assert n.scope == untouched[n.name].scope


class WrittenLayerNorm(Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(np.ones(d, np.float32))
        self.bias = nn.Parameter(np.zeros(d, np.float32))

    def forward(self, x):  # type: ignore[no-untyped-def]
        mu = x.mean(-1, keepdim=True)
        d = x - mu
        var = (d * d).mean(-1, keepdim=True)
        return d / (var + 1e-5).sqrt() * self.weight + self.bias


class WrittenGELU(Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3.0))
        return 0.5 * x * (1.0 + inner.tanh())


class Block(Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = WrittenLayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.act = WrittenGELU()

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + self.act(self.fc(self.ln(x)))


class Net(Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.head = nn.Linear(d, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)


def test_fused_layer_norm_and_gelu_take_the_block_scope() -> None:
    manual_seed(0)
    g = trace(Net(), [InputSpec(("N", 8))])
    out = run_passes(g, "O3").graph
    ln = [n for n in out.nodes if n.op is ops.layer_norm]
    assert [n.scope for n in ln] == ["blocks.0.ln", "blocks.1.ln"]
    assert all(n.origin.startswith("fuse_layer_norm:") for n in ln)
    # gelu fused (blocks.i.act), then absorbed by the linear of blocks.i.fc -> blocks.i
    lin = [n for n in out.nodes if n.op is ops.linear and n.attrs["activation"] != "none"]
    assert [(n.scope, n.origin) for n in lin] == [
        ("blocks.0", "fuse_linear:linear_gelu"), ("blocks.1", "fuse_linear:linear_gelu")]
    gelu_only = run_passes(g, ["fold_constants", "fuse_gelu"]).graph
    gelu = [n for n in gelu_only.nodes if n.op is ops.gelu]
    assert [(n.scope, n.attrs["approximate"]) for n in gelu] == [
        ("blocks.0.act", "tanh"), ("blocks.1.act", "tanh")]
    assert {n.origin.split(":")[0] for n in gelu} == {"fuse_gelu"}
    fused = [n for n in out.nodes if n.op is ops.fused_elementwise]
    assert all(n.origin == "fuse_elementwise:elementwise_chain" for n in fused)


def test_cleanup_passes_keep_the_scope() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (3,))
        with b.scope("enc.0"):
            c = ops.add(ops.constant(value=np.float32(1)), ops.constant(value=np.float32(2)))
            y1 = ops.mul(x, c)
        with b.scope("enc.1"):
            y2 = ops.mul(x, c)
        g = b.build([y1, y2])
    folded = fold_constants(g).graph
    (const,) = [n for n in folded.nodes if n.origin == "fold_constants:folded"]
    assert const.scope == "enc.0"
    merged = eliminate_common_subexpressions(folded).graph
    kept = [n for n in merged.nodes if n.op is ops.mul]
    assert [n.scope for n in kept] == ["enc.0"]  # the survivor keeps its own scope
    alias = [n for n in merged.nodes if n.origin == "eliminate_common_subexpressions:merged"]
    assert [n.scope for n in alias] == ["enc.1"]  # the duplicate's output name lives there


class MLP(Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x, y):  # type: ignore[no-untyped-def]
        return {"loss": F.cross_entropy(self.fc2(F.relu(self.fc1(x))), y)}


@pytest.fixture(scope="module")
def mlp() -> Graph:
    manual_seed(0)
    return trace(MLP(), [InputSpec(("N", 4)), InputSpec(("N",), "int64")])


def test_gradient_nodes_are_scoped_under_grad(mlp: Graph) -> None:
    g = grad(mlp, "loss")
    fwd = {n.name for n in mlp.nodes}
    back = [n for n in g.nodes if n.name not in fwd]
    assert back and all(n.origin.startswith("autodiff:") for n in back)
    for n in back:
        assert n.scope == "grad" or n.scope.startswith("grad/"), (n.name, n.scope)
    by_scope = {n.scope for n in back}
    assert {"grad", "grad/fc1", "grad/fc2"} <= by_scope
    assert by_scope <= {"grad"} | {f"grad/{n.scope}" for n in mlp.nodes if n.scope}
    # each VJP node names its forward op; the forward node is named in the gradient's name
    for fnode in mlp.nodes:
        mine = [n for n in back if n.name.startswith(f"grad/{fnode.name}/")]
        want = "grad/" + fnode.scope if fnode.scope else "grad"
        assert all(n.scope == want and n.origin == f"autodiff:{fnode.op.name}" for n in mine
                   if n.origin not in ("autodiff:seed", "autodiff:output"))
    outs = {n.outputs[0].name: n for n in g.nodes if n.name.startswith("grad:")}
    assert outs["grad:fc1.weight"].scope == "grad/fc1"
    assert outs["grad:fc2.bias"].origin == "autodiff:output"


def test_higher_order_gradient_nests_grad_scopes() -> None:
    with GraphBuilder("f") as b:
        x = b.input("x", "f32", (3,))
        with b.scope("sq"):
            y = ops.reduce_sum(ops.mul(x, ops.mul(x, x)), axes=None, keepdims=False)
        g = b.build({"loss": y})
    g1 = grad(g, "loss", "x")
    with GraphBuilder.from_graph(g1) as b:
        gx = g1.values["grad:x"]
        total = ops.reduce_sum(gx, axes=None, keepdims=False)
        g2 = b.build({**{v.name: v for v in g1.outputs}, "gsum": total})
    h = grad(g2, "gsum", "x")
    scopes = {n.scope for n in h.nodes}
    assert {"sq", "grad/sq", "grad/grad/sq"} <= scopes


def test_train_step_scopes_optimizer_and_rng(mlp: Graph) -> None:
    names = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    step = make_train_step(mlp, Adam(1e-3), clip_grad_norm=1.0).graph
    upd = [n for n in step.nodes if n.origin == "optim:adam"]
    assert {n.scope for n in upd} == {f"optim/{p}" for p in names}
    # small parameters share one update over a flat buffer, cut back per parameter
    fused = make_train_step(mlp, Adam(1e-3), clip_grad_norm=1.0, fuse_below=1 << 20).graph
    assert {n.scope for n in fused.nodes if n.origin == "optim:adam"} == \
        {"optim/flat", *(f"optim/{p}" for p in names)}
    assert {n.scope for n in step.nodes if n.origin == "optim:clip_grad_norm"} == {"optim"}
    nxt = {n.outputs[0].name: n for n in step.nodes}
    assert nxt["fc1.weight:next"].scope == "optim/fc1.weight"
    assert nxt["opt.m/fc2.bias:next"].scope == "optim/fc2.bias"
    with GraphBuilder("drop") as b:
        x = b.input("x", "f32", ("N", 4))
        key = b.input("key", "i64", (2,))
        b.metadata["rng_input"] = "key"
        w = b.param("w", np.ones((4, 1), np.float32))
        with b.scope("drop"):
            h = ops.dropout(ops.matmul(x, w), key, ratio=0.5, salt=0)
        g = b.build({"loss": ops.reduce_mean(h, axes=None, keepdims=False)})
    sgd = make_train_step(g, SGD(0.1)).graph
    rng = [n for n in sgd.nodes if n.origin == "train_step:rng"]
    assert rng and {n.scope for n in rng} == {"rng"}
    assert {n.scope for n in sgd.nodes if n.origin == "optim:sgd"} == {"optim/w"}


def test_remat_clones_keep_the_forward_scope() -> None:
    with GraphBuilder("deep") as b:
        x = b.input("x", "f32", ("N", 4))
        h = x
        for i in range(6):
            with b.scope(f"layers.{i}"):
                w = b.param(f"layers.{i}.w", np.eye(4, dtype=np.float32))
                h = ops.tanh(ops.matmul(h, w))
        g = b.build({"loss": ops.reduce_mean(h, axes=None, keepdims=False)})
    r = rematerialize(grad(g, "loss"), policy="every_k", k=2, bindings={"N": 8})
    clones = [n for n in r.graph.nodes if n.origin == "remat"]
    assert clones
    fwd = {n.name: n for n in g.nodes}
    for c in clones:
        original = fwd[c.name.split("/", 1)[1]]
        assert c.scope == original.scope and c.scope.startswith("layers.")


def test_lora_and_quantised_nodes_take_the_adapted_node_scope() -> None:
    with GraphBuilder("lin") as b:
        x = b.input("x", "f32", ("N", 32))
        with b.scope("blk.attn.q_proj"):
            w = b.param("blk.attn.q_proj.weight", np.ones((32, 32), np.float32))
            y = ops.matmul(x, ops.transpose(w, perm=(1, 0)))
        g = b.build({"y": y})
    lo = add_lora(g, targets=["blk.attn.q_proj.weight"], rank=2).graph
    adapter = [n for n in lo.nodes if n.origin == "lora:adapter"]
    assert adapter and {n.scope for n in adapter} == {"blk.attn.q_proj"}
    q = quantize_weights(g, "q4_1").graph
    made = [n for n in q.nodes if n.origin.startswith("quantize_weights:")]
    assert made and {n.scope for n in made} == {"blk.attn.q_proj"}
    assert {n.origin for n in made} == {"quantize_weights:q4_1"}


@pytest.mark.parametrize("name", ["mlp_tiny", "lenet", "autoencoder_conv", "vae", "gpt_tiny",
                                  "char_rnn", "resnet_tiny", "transformer_tiny"])
def test_o3_over_zoo_models_keeps_scopes(name: str) -> None:
    from lbdl_graph.passes.manager import PASSES

    manual_seed(0)
    g = zoo.get(name).trace()
    traced = {n.scope for n in g.nodes}
    out = run_passes(g, "O3").graph
    assert all(_inside(n.scope, traced) for n in out.nodes)
    made = [n for n in out.nodes if n.origin]
    assert made and {n.origin.split(":")[0] for n in made} <= set(PASSES)
    if all(n.scope for n in g.nodes):  # every traced node in a module: so is every fused one
        assert all(n.scope for n in out.nodes), [n.name for n in out.nodes if not n.scope]
