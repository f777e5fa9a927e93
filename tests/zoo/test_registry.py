"""The zoo registry: every entry traces with a symbolic batch dim to a verified graph, tiny
entries run on NumPy with finite outputs of the expected shapes (in evaluation and training
mode), node names follow module paths and node sources point into the zoo's files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lbdl_graph.frontends.zoo as zoo_pkg
from lbdl_graph.frontends import Module
from lbdl_graph.frontends.zoo import ZOO, ZooEntry, concrete_shape, get, names
from lbdl_graph.verify import verify

from .helpers import feeds, run_entry, traced

TINY = names(tiny=True)
ZOO_DIR = os.path.dirname(zoo_pkg.__file__)

REQUIRED = ["mlp", "lenet", "lenet_digits", "resnet18", "resnet50", "resnet_tiny",
            "transformer_tiny", "transformer_base", "gpt2_small", "gpt_mini", "vit_tiny",
            "vit_b16", "autoencoder_mlp", "autoencoder_conv", "denoising_autoencoder",
            "unet_tiny", "detector_tiny", "clip_tiny", "dqn", "diffusion_denoiser", "gan",
            "gnn", "char_rnn", "lstm_lm", "vae", "capsnet", "capsnet_mnist", "alexnet", "vgg16",
            "googlenet", "alexnet_tiny", "vgg_tiny", "googlenet_tiny"]


def test_registry_has_every_required_model_with_metadata():
    missing = [n for n in REQUIRED if n not in ZOO]
    assert not missing, missing
    assert set(names(tiny=False)) == {"resnet18", "resnet50", "transformer_base", "gpt2_small",
                                      "vit_b16", "capsnet_mnist", "alexnet", "vgg16",
                                      "googlenet"}
    for name, e in ZOO.items():
        assert isinstance(e, ZooEntry) and e.name == name
        assert e.description and e.task and e.inputs and e.outputs
        # a symbolic batch (or node) dim "N" in some input, and the outputs depend on it
        assert any("N" in s.shape for s in e.inputs.values()), name
        assert all("N" in shape for shape in e.outputs.values()), name
    assert get("gpt_mini") is ZOO["gpt_mini"]
    with pytest.raises(KeyError, match="known: mlp"):
        get("no_such_model")


def test_sequence_models_take_a_symbolic_length():
    for name in ("gpt2_small", "gpt_mini", "clip_tiny"):
        assert any("T" in s.shape for s in ZOO[name].inputs.values()), name
    src, tgt = ZOO["transformer_tiny"].inputs.values()
    assert src.shape == ("N", "S") and tgt.shape == ("N", "T")
    # unrolled RNNs need a static length
    assert all(isinstance(d, int) for d in ZOO["char_rnn"].inputs["idx"].shape[1:])


@pytest.mark.parametrize("name", TINY)
def test_tiny_entry_traces_verifies_and_runs(name):
    entry = ZOO[name]
    model, g = traced(name)
    verify(g)
    assert isinstance(model, Module)
    assert [v.name for v in g.inputs] == list(entry.inputs)
    for v in g.inputs:
        assert tuple(v.type.shape) == tuple(entry.inputs[v.name].shape)
    assert {v.name: tuple(v.type.shape) for v in g.outputs} == entry.outputs
    assert not g.metadata["training"] and "rng_input" not in g.metadata
    # one graph serves several batch sizes (and sequence lengths)
    for dims in ({"N": 1, "T": 5, "S": 3}, {"N": 3, "T": 7, "S": 9}):
        out = run_entry(name, feeds(name, dims))
        assert list(out) == list(entry.outputs)
        for k, shape in entry.output_shapes(dims).items():
            assert out[k].shape == shape, (k, out[k].shape, shape)
            assert out[k].dtype == np.float32
            assert np.isfinite(out[k]).all(), k


@pytest.mark.parametrize("name", TINY)
def test_tiny_entry_runs_in_training_mode(name):
    entry = ZOO[name]
    _, g = traced(name, training=True)
    assert g.metadata["training"]
    out = run_entry(name, feeds(name, {"N": 3}, graph=g), training=True)
    for k, shape in entry.output_shapes({"N": 3}).items():
        assert out[k].shape == shape and np.isfinite(out[k]).all(), k
    # BatchNorm's running statistics come back as state updates
    updates = g.metadata.get("state_updates", {})
    has_bn = any(type(m).__name__.startswith("BatchNorm") for m in traced(name)[0].modules())
    assert bool(updates) == has_bn
    for out_name in updates.values():
        assert np.isfinite(out[out_name]).all()


def test_stochastic_entries_take_the_rng_key_only_in_training():
    for name in ("denoising_autoencoder", "vae", "lstm_lm"):
        assert "rng_key" not in [v.name for v in traced(name)[1].inputs]
    assert "rng_key" in [v.name for v in traced("denoising_autoencoder", True)[1].inputs]
    assert "rng_key" in [v.name for v in traced("vae", True)[1].inputs]
    assert "rng_key" in [v.name for v in traced("lstm_lm", True)[1].inputs]  # dropout 0.2
    assert "rng_key" not in [v.name for v in traced("gpt_mini", True)[1].inputs]  # dropout 0


@pytest.mark.parametrize("name", TINY)
def test_node_names_follow_module_paths(name):
    model, g = traced(name)
    paths = {p for p, _ in model.named_modules()}
    for node in g.nodes:
        scope = node.name.rsplit("/", 1)[0] if "/" in node.name else ""
        assert scope in paths, (node.name, sorted(paths)[:10])


def test_node_names_of_transformers_and_resnets():
    scopes = {n.name.rsplit("/", 1)[0] for n in traced("gpt_mini")[1].nodes if "/" in n.name}
    for s in ("tok_emb", "pos_emb", "layers.0.ln1", "layers.0.attn", "layers.0.attn.out_proj",
              "layers.3.mlp.fc1", "layers.3.mlp.act", "ln_f", "head"):
        assert s in scopes, s
    scopes = {n.name.rsplit("/", 1)[0] for n in traced("transformer_tiny")[1].nodes
              if "/" in n.name}
    for s in ("encoder.layers.1.attn", "decoder.layers.0.attn", "decoder.layers.1.cross_attn",
              "decoder.layers.1.ln3", "generator"):
        assert s in scopes, s
    scopes = {n.name.rsplit("/", 1)[0] for n in traced("resnet_tiny")[1].nodes if "/" in n.name}
    for s in ("conv1", "bn1", "layer1.0.conv2", "layer2.0.downsample.0", "layer3.0.bn2", "fc"):
        assert s in scopes, s
    params = {p.name for p in traced("resnet_tiny")[1].params}
    assert {"layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
            "fc.bias"} <= params


@pytest.mark.parametrize("name", TINY)
def test_sources_point_into_the_zoo_files(name):
    _, g = traced(name)
    files = set()
    for node in g.nodes:
        assert node.source is not None, node.name
        assert os.path.dirname(os.path.abspath(node.source.file)) == ZOO_DIR, (
            node.name, node.source)
        files.add(os.path.basename(node.source.file))
    assert "_common.py" not in files  # helpers report the model line that called them


def test_sources_name_the_forward_line():
    _, g = traced("resnet_tiny")
    node = next(n for n in g.nodes if n.name.startswith("layer2.0.downsample.0/"))
    assert os.path.basename(node.source.file) == "resnet.py"
    with open(node.source.file) as f:
        line = f.readlines()[node.source.line - 1]
    assert "self.downsample(x)" in line


def test_example_inputs_and_shapes():
    e = ZOO["gpt_mini"]
    x = e.example_inputs({"N": 4, "T": 10}, seed=3)["idx"]
    assert x.shape == (4, 10) and x.dtype == np.int64 and x.min() >= 0 and x.max() < 96
    np.testing.assert_array_equal(x, e.example_inputs({"N": 4, "T": 10}, seed=3)["idx"])
    assert e.output_shapes({"N": 4, "T": 10}) == {"output": (4, 10, 96)}
    assert concrete_shape(("N", 3, "T"), {"N": 2, "T": 5}) == (2, 3, 5)
    adj = ZOO["gnn_tiny"].example_inputs({"N": 6})["adj"]
    np.testing.assert_allclose(adj, adj.T)
    assert adj.shape == (6, 6) and (np.diag(adj) > 0).all()
