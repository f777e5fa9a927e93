"""Modules: registration, traversal, state dicts, modes, freezing and initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbdl_graph.errors import CheckpointError, OpError, ShapeError
from lbdl_graph.frontends import Buffer, Module, Parameter, init, manual_seed, nn


class Block(Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("scale", np.ones(3, dtype=np.float32))
        self.register_buffer("cache", np.zeros(2, dtype=np.float32), persistent=False)

    def forward(self, x):
        return self.bn(self.fc(x)) * self.scale


class Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(3, 2, bias=False))
        self.extra = Parameter(np.zeros(2, dtype=np.float32))


def test_named_parameters_buffers_and_modules_follow_pytorch_names():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "extra",
        "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.bn.weight", "blocks.0.bn.bias",
        "blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.bn.weight", "blocks.1.bn.bias",
        "head.1.weight",
    ]
    assert [n for n, _ in net.named_buffers()][:5] == [
        "blocks.0.scale", "blocks.0.cache", "blocks.0.bn.running_mean", "blocks.0.bn.running_var",
        "blocks.0.bn.num_batches_tracked"]
    assert [n for n, _ in net.named_modules()] == [
        "", "blocks", "blocks.0", "blocks.0.fc", "blocks.0.bn", "blocks.1", "blocks.1.fc",
        "blocks.1.bn", "head", "head.0", "head.1"]
    assert [type(m).__name__ for m in net.children()] == ["ModuleList", "Sequential"]
    assert net.blocks[1].fc.weight.shape == (3, 4)
    assert net.get_submodule("blocks.1.bn") is net.blocks[1].bn
    assert net.num_parameters() == 2 + 2 * (12 + 3 + 3 + 3) + 6
    assert all(isinstance(b, Buffer) for b in net.buffers())


def test_state_dict_skips_non_persistent_buffers_and_round_trips():
    manual_seed(0)
    a = Net()
    sd = a.state_dict()
    assert "blocks.0.cache" not in sd and "blocks.0.scale" in sd
    assert sd["blocks.1.bn.num_batches_tracked"].dtype == np.int64
    assert sd["blocks.0.fc.weight"].shape == (3, 4)
    manual_seed(1)
    b = Net()
    assert not np.array_equal(b.blocks[0].fc.weight.data, a.blocks[0].fc.weight.data)
    weight_array = b.blocks[0].fc.weight.data
    result = b.load_state_dict({k: v.copy() for k, v in sd.items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    assert b.blocks[0].fc.weight.data is weight_array  # copied in place


def test_load_state_dict_lists_missing_unexpected_and_misshaped_keys():
    net = Net()
    sd = net.state_dict()
    bad = dict(sd)
    del bad["head.1.weight"]
    bad["blocks.0.fc.weight"] = np.zeros((4, 4), dtype=np.float32)
    bad["decoder.weight"] = np.zeros(1, dtype=np.float32)
    before = net.blocks[0].fc.bias.data.copy()
    bad["blocks.0.fc.bias"] = before + 1
    with pytest.raises(CheckpointError) as info:
        net.load_state_dict(bad)
    text = str(info.value)
    assert "missing keys: head.1.weight" in text
    assert "unexpected keys: decoder.weight" in text
    assert "blocks.0.fc.weight: checkpoint (4, 4), model (3, 4)" in text
    np.testing.assert_array_equal(net.blocks[0].fc.bias.data, before)  # nothing written

    del bad["blocks.0.fc.weight"]
    result = net.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["blocks.0.fc.weight", "head.1.weight"]
    assert result.unexpected_keys == ["decoder.weight"]
    np.testing.assert_array_equal(net.blocks[0].fc.bias.data, before + 1)


def test_train_eval_and_freezing():
    net = Net()
    assert net.training and net.blocks[0].bn.training
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.blocks.requires_grad_(False)
    assert not net.blocks[0].fc.weight.requires_grad
    assert net.head[1].weight.requires_grad
    assert net.num_parameters(trainable_only=True) == 2 + 6


def test_attribute_rules():
    class Bad(Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(2, 2)

    with pytest.raises(OpError, match=r"super\(\).__init__"):
        Bad()
    net = Net()
    with pytest.raises(OpError, match="Parameter"):
        net.blocks[0].fc.weight = np.zeros((3, 4))
    net.blocks[0].scale = np.full(3, 2.0, dtype=np.float32)  # assigning to a buffer keeps it one
    assert isinstance(net.blocks[0].scale, Buffer)
    np.testing.assert_array_equal(net.state_dict()["blocks.0.scale"], 2.0)
    with pytest.raises(AttributeError):
        _ = net.nothing


def test_shared_modules_are_listed_once_but_saved_under_every_name():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert set(seq.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seq.append(nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and len(seq[:2]) == 2
    ml = nn.ModuleList()
    ml.extend([nn.ReLU(), nn.Tanh()])
    ml.insert(0, nn.Sigmoid())
    assert [type(m).__name__ for m in ml] == ["Sigmoid", "ReLU", "Tanh"]
    md = nn.ModuleDict({"a": nn.ReLU()})
    md["b"] = nn.Tanh()
    assert list(md) == ["a", "b"] and "b" in md and len(md) == 2
    with pytest.raises(OpError):
        nn.Sequential(nn.ReLU(), "relu")
    assert "Linear(in_features=2, out_features=3, bias=True)" in repr(seq)


def test_manual_seed_makes_construction_reproducible():
    manual_seed(7)
    a = nn.Conv2d(3, 4, 3)
    manual_seed(7)
    b = nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)


def test_default_initialisations_follow_pytorch():
    manual_seed(3)
    lin = nn.Linear(50, 400)
    bound = 1 / math.sqrt(50)
    for p in (lin.weight.data, lin.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert abs(lin.weight.data.std() - bound / math.sqrt(3)) < 0.05 * bound
    conv = nn.Conv2d(4, 64, (3, 5), groups=2)
    fan_in = 2 * 15
    assert np.abs(conv.weight.data).max() <= 1 / math.sqrt(fan_in)
    assert np.abs(conv.weight.data).max() > 0.9 / math.sqrt(fan_in)
    convt = nn.ConvTranspose2d(8, 6, 3)  # weight (8, 6, 3, 3): fan_in = 6 * 9
    assert np.abs(convt.bias.data).max() <= 1 / math.sqrt(54)
    emb = nn.Embedding(500, 40, padding_idx=3)
    assert abs(emb.weight.data.std() - 1.0) < 0.05 and not emb.weight.data[3].any()
    mha = nn.MultiheadAttention(16, 4)
    xb = math.sqrt(6 / (16 + 48))
    assert np.abs(mha.in_proj_weight.data).max() <= xb
    assert np.abs(mha.in_proj_weight.data).max() > 0.9 * xb
    assert not mha.in_proj_bias.data.any() and not mha.out_proj.bias.data.any()
    lstm = nn.LSTM(3, 25)
    assert all(np.abs(p.data).max() <= 0.2 for p in lstm.parameters())
    bn = nn.BatchNorm2d(3)
    assert bn.weight.data.tolist() == [1, 1, 1] and bn.running_var.data.tolist() == [1, 1, 1]


def test_init_functions_fill_in_place():
    p = Parameter(np.zeros((20, 30), dtype=np.float32))
    assert init.xavier_uniform_(p) is p
    assert np.abs(p.data).max() <= math.sqrt(6 / 50)
    init.constant_(p, 2.5)
    assert (p.data == 2.5).all()
    assert init.calculate_fan_in_and_fan_out((8, 4, 3, 3)) == (36, 72)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Linear(0, 3),
        lambda: nn.Conv2d(3, 8, -1),
        lambda: nn.Conv1d(4, 6, 3, groups=4),
        lambda: nn.Conv2d(2, 2, 3, stride=2, padding="same"),
        lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2),
        lambda: nn.MaxPool2d(2, padding=2),
        lambda: nn.MultiheadAttention(10, 4),
        lambda: nn.Dropout(1.5),
        lambda: nn.Embedding(5, 3, padding_idx=7),
        lambda: nn.LSTM(3, 0),
        lambda: nn.BatchNorm2d(3, momentum=2.0),
        lambda: nn.RNN(3, 4, nonlinearity="gelu"),
    ],
    ids=["linear", "kernel", "groups", "same-stride", "output-padding", "pool-padding", "heads",
         "dropout", "padding-idx", "hidden", "momentum", "nonlinearity"],
)
def test_invalid_hyper_parameters_raise_typed_errors_naming_the_layer(make):
    with pytest.raises(ShapeError) as info:
        make()
    assert info.value.source is not None and info.value.source.file == __file__
    name = str(info.value).split(":")[0]
    assert name in {"Linear", "Conv2d", "Conv1d", "ConvTranspose2d", "MaxPool2d",
                    "MultiheadAttention", "Dropout", "Embedding", "LSTM", "BatchNorm2d", "RNN"}


def test_module_to_double_converts_float_parameters_only():
    bn = nn.BatchNorm1d(2).double()
    assert bn.weight.data.dtype == np.float64 and bn.running_mean.data.dtype == np.float64
    assert bn.num_batches_tracked.data.dtype == np.int64


def test_load_state_dict_rejects_bad_dtypes_without_writing() -> None:
    from lbdl_graph.errors import CheckpointError
    from lbdl_graph.frontends import nn as lnn

    m = lnn.Sequential(lnn.Linear(2, 2), lnn.BatchNorm1d(2))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    sd = {k: np.full_like(v, 7) for k, v in before.items()}
    sd["0.bias"] = np.array(["a", "b"])
    sd["1.num_batches_tracked"] = np.array(2.5)  # float into an int buffer would truncate
    with pytest.raises(CheckpointError) as info:
        m.load_state_dict(sd)
    assert "0.bias" in str(info.value) and "num_batches_tracked" in str(info.value)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # nothing was written
