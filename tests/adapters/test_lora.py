"""LoRA adapters: insertion, training only A / B, merging back to the base structure, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import CheckpointError, GraphError, OpError, ShapeError
from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.graph import Graph
from lbdl_graph.passes.lora import (
    ATTENTION_TARGETS,
    add_lora,
    base_weights,
    load_adapters,
    merge_lora,
    save_adapters,
)

from .helpers import batch, gpt, train

ATTN = ("layers.0.attn.in_proj_weight", "layers.0.attn.out_proj.weight",
        "layers.1.attn.in_proj_weight", "layers.1.attn.out_proj.weight")


def _randomise_b(g: Graph, seed: int = 1, std: float = 0.1) -> Graph:
    rng = np.random.default_rng(seed)
    return g.with_params({p.name: (std * rng.standard_normal(p.data.shape)).astype(p.data.dtype)
                          for p in g.params if p.name.endswith(".lora_B")})


def _logits(g: Graph) -> np.ndarray:
    return run(g, {"idx": batch()["idx"]})["output"]


@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
def test_fresh_adapters_compute_the_base_model(init: str) -> None:
    _, g, _ = gpt()
    res = add_lora(g, init=init)
    lg = res.graph
    assert res.changed and res.stats["adapters"] == 4
    assert sorted(lg.metadata["lora"]["adapters"]) == sorted(ATTN)
    np.testing.assert_array_equal(_logits(lg), _logits(g))
    a = lg.param_map["layers.0.attn.in_proj_weight.lora_A"].data
    assert a.shape == (8, 16) and a.dtype == np.float32 and a.std() > 0
    assert not lg.param_map["layers.0.attn.in_proj_weight.lora_B"].data.any()
    if init == "gaussian":  # std 1/rank
        assert 0.08 < a.std() < 0.17
    else:  # U(±1/sqrt(in))
        assert np.abs(a).max() <= 0.25


def test_trainable_parameters_are_a_few_percent_of_gpt_mini() -> None:
    _, g, _ = gpt("gpt_mini")
    lg = add_lora(g, rank=8).graph
    # 4 layers x (in_proj: A 8x128 + B 384x8, out_proj: A 8x128 + B 128x8)
    assert lg.num_params(True) == 4 * (8 * 128 + 384 * 8 + 8 * 128 + 128 * 8) == 24576
    assert lg.num_params(False) == g.num_params()
    frac = lg.num_params(True) / lg.num_params()
    assert 0.01 < frac < 0.05, frac
    assert all(p.name.endswith((".lora_A", ".lora_B")) for p in lg.params if p.trainable)


def test_fine_tuning_changes_only_adapters_and_merge_agrees() -> None:
    _, logits_g, loss_g = gpt()
    lora = add_lora(loss_g, rank=4, alpha=8).graph
    trained, losses, names = train(lora, steps=12)
    assert losses[-1] < losses[0] - 0.1, losses
    assert sorted(names) == sorted(f"{w}.lora_{k}" for w in ATTN for k in "AB")
    for p in loss_g.params:  # the base weights did not move
        np.testing.assert_array_equal(trained.param_map[p.name].data, p.data)
    for n in names:
        assert not np.array_equal(trained.param_map[n].data, lora.param_map[n].data), n
    # the same adapters on the logits graph: merged and unmerged agree
    unmerged = add_lora(logits_g, rank=4, alpha=8).graph.with_params(
        {n: trained.param_map[n].data for n in names})
    merged = merge_lora(unmerged).graph
    np.testing.assert_allclose(_logits(merged), _logits(unmerged), atol=1e-5, rtol=0)
    assert np.abs(_logits(merged) - _logits(logits_g)).max() > 1e-3  # it did learn something


def test_merged_graph_has_exactly_the_base_structure() -> None:
    _, g, _ = gpt()
    lg = _randomise_b(add_lora(g).graph)
    assert lg.op_counts() != g.op_counts()
    res = merge_lora(lg)
    m = res.graph
    assert res.changed and res.stats["adapters"] == 4
    assert [n.name for n in m.nodes] == [n.name for n in g.nodes]
    assert [v.name for v in m.iter_values()] == [v.name for v in g.iter_values()]
    assert m.op_counts() == g.op_counts()
    assert [(p.name, str(p.value.type), p.trainable) for p in m.params] == \
        [(p.name, str(p.value.type), p.trainable) for p in g.params]
    assert "lora" not in m.metadata
    assert str(m) == str(g)
    w = "layers.1.attn.out_proj.weight"
    a, b = (lg.param_map[f"{w}.lora_{k}"].data.astype(np.float64) for k in "AB")
    np.testing.assert_allclose(m.param_map[w].data, g.param_map[w].data + 2.0 * b @ a, atol=1e-6)
    assert merge_lora(m).changed is False


def test_cross_attention_reads_row_slices_of_the_stacked_projection() -> None:
    entry = ZOO["transformer_tiny"]
    manual_seed(0)
    g = entry.trace(entry.model())
    lg = add_lora(g, rank=4).graph
    meta = lg.metadata["lora"]
    assert "decoder.layers.0.cross_attn.in_proj_weight" in meta["adapters"]
    assert any(n.endswith("/lora/B_rows") for n in lg.node_map)
    feeds = entry.example_inputs({"N": 2, "S": 5, "T": 6})
    np.testing.assert_array_equal(run(lg, feeds)["output"], run(g, feeds)["output"])
    lg = _randomise_b(lg)
    m = merge_lora(lg).graph
    ref = run(lg, feeds)["output"]
    # Merged, W + s*B@A is rounded once; unmerged, x@W and x@A@B are rounded apart, and the
    # difference passes through 4 blocks of LayerNorms. Seeds 0-5 give at most 44 float32 ulps
    # of the largest logit; 256 ulps (5e-4 here) sits far below the LoRA delta itself (34).
    tol = 256 * np.finfo(np.float32).eps * float(np.abs(ref).max())
    np.testing.assert_allclose(run(m, feeds)["output"], ref, rtol=0, atol=tol)
    assert [n.name for n in m.nodes] == [n.name for n in g.nodes]


def _dense_graph() -> Graph:
    rng = np.random.default_rng(0)
    with GraphBuilder("dense") as b:
        x = b.input("x", "f32", ("N", 6))
        h = ops.matmul(x, b.param("w_kn", rng.standard_normal((6, 5)).astype(np.float32)))
        h = ops.linear(h, b.param("lin.w", rng.standard_normal((5, 4)).astype(np.float32)),
                       b.param("lin.b", np.ones(4, np.float32)))
        y = ops.linear(h, b.param("act.w", rng.standard_normal((4, 3)).astype(np.float32)),
                       None, activation="relu")
        return b.build({"y": y})


def test_direct_weights_and_linear_nodes_merge_correctly() -> None:
    g = _dense_graph()
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    lg = add_lora(g, targets=["w_kn", "lin.*"], rank=2, alpha=4).graph
    assert {a["layout"] for a in lg.metadata["lora"]["adapters"].values()} == {"kn"}
    lg = _randomise_b(lg)
    m = merge_lora(lg).graph
    np.testing.assert_allclose(run(m, {"x": x})["y"], run(lg, {"x": x})["y"], atol=1e-5)
    assert [n.name for n in m.nodes] == [n.name for n in g.nodes]
    with pytest.raises(OpError, match=r"'act\.w'.*fused activation 'relu'"):
        add_lora(g, targets=["act.w"])


def test_target_errors_name_the_weight() -> None:
    _, g, _ = gpt()
    with pytest.raises(OpError, match=r"'tok_emb\.weight'.*gather node 'tok_emb/gather'"):
        add_lora(g, targets=["tok_emb.weight"])
    with pytest.raises(OpError, match=r"'layers\.0\.ln1\.bias'"):
        add_lora(g, targets=["layers.0.ln1.bias"])
    with pytest.raises(OpError, match=r"'\*nothing\*' matches no"):
        add_lora(g, targets=["*nothing*"])
    with pytest.raises(ShapeError, match="positive integer"):
        add_lora(g, rank=0)
    with pytest.raises(ShapeError, match=r"rank 17 exceeds.*out_proj"):
        add_lora(g, rank=17, targets=["layers.0.attn.out_proj.weight"])
    with pytest.raises(OpError, match="default targets"):
        add_lora(_dense_graph())
    once = add_lora(g, targets=["layers.0.attn.out_proj.weight"]).graph
    with pytest.raises(GraphError, match=r"already have a LoRA adapter"):
        add_lora(once, targets=["layers.0.attn.out_proj.weight"])


def test_a_second_call_adds_other_weights_without_freezing_the_first_adapters() -> None:
    _, g, _ = gpt()
    g1 = add_lora(g, targets=["*attn.out_proj.weight"], rank=2).graph
    before = json.dumps(g1.metadata["lora"], sort_keys=True)
    g2 = add_lora(g1, targets=["*mlp.fc1.weight"], rank=4, alpha=4).graph
    assert json.dumps(g1.metadata["lora"], sort_keys=True) == before  # g1 is not modified
    trainable = {p.name for p in g2.params if p.trainable}
    assert trainable == {f"layers.{i}.{w}.lora_{k}" for i in range(2) for k in "AB"
                         for w in ("attn.out_proj.weight", "mlp.fc1.weight")}
    assert g2.metadata["lora"]["targets"] == ["*attn.out_proj.weight", "*mlp.fc1.weight"]
    m = merge_lora(_randomise_b(g2)).graph
    assert str(m) == str(g) and all(p.trainable for p in m.params)


def test_adapters_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, g, _ = gpt()
    lg = _randomise_b(add_lora(g, rank=4, alpha=8).graph)
    path = save_adapters(lg, tmp_path / "task.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        header = f.metadata()
        assert sorted(f.keys()) == sorted(f"{w}.lora_{k}" for w in ATTN for k in "AB")
    assert json.loads(header["rank"]) == 4 and json.loads(header["alpha"]) == 8.0
    assert json.loads(header["targets"]) == list(ATTENTION_TARGETS)
    assert json.loads(header["base_weights"]) == base_weights(g)
    # into the plain base: adapters are inserted with the stored configuration
    loaded = load_adapters(g, path)
    np.testing.assert_array_equal(_logits(loaded), _logits(lg))
    assert loaded.metadata["lora"]["adapters"] == lg.metadata["lora"]["adapters"]
    # into a graph that already has fresh adapters of the same shape: values replaced
    again = load_adapters(add_lora(g, rank=4, alpha=8).graph, path)
    np.testing.assert_array_equal(_logits(again), _logits(lg))


def test_adapters_for_another_base_raise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, g, _ = gpt()
    path = save_adapters(add_lora(g, rank=4).graph, tmp_path / "a.safetensors")
    other = ZOO["transformer_tiny"]
    with pytest.raises(CheckpointError, match=r"different base.*missing from the graph: "
                                              r"\['head\.weight'"):
        load_adapters(other.trace(other.model()), path)
    _, mini, _ = gpt("gpt_mini")
    with pytest.raises(CheckpointError, match=r"layers\.0\.attn\.in_proj_weight: \[48, 16\] vs"
                                              r" \[384, 128\]"):
        load_adapters(mini, path)
    with pytest.raises(CheckpointError, match="do not fit the adapters"):
        load_adapters(add_lora(g, rank=2).graph, path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="cannot read adapter file"):
        load_adapters(g, bad)
    with pytest.raises(CheckpointError, match="no adapter file"):
        load_adapters(g, tmp_path / "missing.safetensors")
    with pytest.raises(GraphError, match="no LoRA adapters"):
        save_adapters(g, tmp_path / "none.safetensors")
