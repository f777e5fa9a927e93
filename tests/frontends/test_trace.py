"""Tracing: inputs, parameters, outputs, node names, source lines, modes and random keys."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import GraphError
from lbdl_graph.frontends import F, InputSpec, Module, nn, trace

from .helpers import rand


def _line(marker: str) -> int:
    with open(__file__) as f:
        for i, text in enumerate(f, 1):
            if marker in text and "_line(" not in text:
                return i
    raise AssertionError(marker)


class Attn(Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)

    def forward(self, x):
        return F.softmax(self.q_proj(x) @ self.k_proj(x).mT, -1) @ x


class Layer(Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = Attn(d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.attn(x))


class Encoder(Module):
    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Layer(d) for _ in range(n)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Model(Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder(4, 2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.encoder(x))  # model-forward-line


def test_node_names_follow_module_paths_and_params_keep_state_dict_names():
    model = Model()
    g = trace(model, [("N", "T", 4)])
    names = [n.name for n in g.nodes]
    assert "encoder.layers.0.attn.q_proj/matmul" in names
    assert "encoder.layers.1.attn.k_proj/add" in names
    assert "encoder.layers.1.norm/layer_norm" in names
    assert "head/matmul" in names
    assert [p.name for p in g.params] == list(model.state_dict())
    assert all(p.trainable for p in g.params)
    assert g.inputs[0].name == "x" and g.inputs[0].type.shape == ("N", "T", 4)
    assert g.outputs[0].name == "output" and g.outputs[0].type.shape == ("N", "T", 3)
    assert g.metadata["training"] is True


def test_nodes_carry_the_users_line_not_the_layer_library():
    g = trace(Model(), [(2, 3, 4)])
    head = [n for n in g.nodes if n.name.startswith("head/")]
    assert head and all(n.source.file == __file__ for n in head)
    assert all(n.source.line == _line("# model-forward-line") for n in head)
    q = g.node_map["encoder.layers.0.attn.q_proj/matmul"]
    assert q.source.file == __file__ and "forward" in q.source.func


def test_symbolic_batch_runs_with_any_batch_size():
    model = Model()
    g = trace(model, [("N", 3, 4)])
    for n in (1, 5):
        x = rand(n, 3, 4)
        assert run(g, {"x": x})["output"].shape == (n, 3, 3)


def test_input_specs_arrays_dicts_and_names():
    def fn(tokens, scale):
        return F.embedding(tokens, scale)

    g = trace(fn, {"tokens": InputSpec(("B", 5), "int64"), "scale": np.zeros((7, 3), np.float32)})
    assert [(v.name, str(v.type)) for v in g.inputs] == [("tokens", "i64[B,5]"),
                                                        ("scale", "f32[7,3]")]
    g = trace(lambda a, *rest: a * 2, [InputSpec((2,), name="first"), (3,)])
    assert [v.name for v in g.inputs] == ["first", "input1"]
    assert g.name == "<lambda>"
    assert trace(Model(), [(1, 2, 4)], name="m").name == "m"


def test_tuple_and_dict_outputs_are_named():
    g = trace(lambda x: (x + 1, x * 2), [(2,)])
    assert g.output_names() == ["output0", "output1"]
    g = trace(lambda x: {"logits": x + 1, "probs": F.softmax(x)}, [(2,)])
    assert g.output_names() == ["logits", "probs"]
    out = run(g, {"x": np.array([0.0, 1.0], np.float32)})
    np.testing.assert_allclose(out["logits"], [1.0, 2.0])
    with pytest.raises(GraphError, match="not a Tensor"):
        trace(lambda x: (x, 3), [(2,)])


def test_frozen_parameters_and_buffers_are_not_trainable():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[0].requires_grad_(False)
    g = trace(model.eval(), [(2, 3)])
    flags = {p.name: p.trainable for p in g.params}
    assert flags == {"0.weight": False, "0.bias": False, "1.weight": True, "1.bias": True,
                     "1.running_mean": False, "1.running_var": False,
                     "1.num_batches_tracked": False}


def test_graph_parameters_are_snapshots():
    lin = nn.Linear(2, 2)
    g = trace(lin, [(1, 2)])
    before = g.param_map["weight"].data.copy()
    lin.weight.data[...] = 5.0
    np.testing.assert_array_equal(g.param_map["weight"].data, before)


def test_training_override_is_restored_after_tracing():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.eval()
    g = trace(model, [(2, 3)], training=True)
    assert g.metadata["training"] is True and "rng_key" in [v.name for v in g.inputs]
    assert not model.training and not model[1].training
    g = trace(model, [(2, 3)])
    assert "rng_input" not in g.metadata
    assert [n.op.name for n in g.nodes].count("dropout") == 0


def test_dropout_calls_share_one_key_input_with_distinct_salts():
    model = nn.Sequential(nn.Dropout(0.1), nn.Linear(3, 3), nn.Dropout(0.2), nn.Dropout(0.3))
    g = trace(model, [("N", 3)])
    assert g.metadata["rng_input"] == "rng_key"
    key = g.input("rng_key")
    assert str(key.type) == "i64[2]"
    drops = [n for n in g.nodes if n.op.name == "dropout"]
    assert [n.attrs["salt"] for n in drops] == [0, 1, 2]
    assert [n.attrs["ratio"] for n in drops] == pytest.approx([0.1, 0.2, 0.3])
    assert all(n.inputs[1] is key for n in drops)


def test_a_module_called_twice_shares_parameters():
    class Twice(Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(self.fc(x))

    model = Twice()
    g = trace(model, [(2, 3)])
    assert len(g.params) == 2
    assert [n.name for n in g.nodes if n.op.name == "matmul"] == ["fc/matmul", "fc/matmul_1"]
    x = rand(2, 3)
    w, b = model.fc.weight.data, model.fc.bias.data
    np.testing.assert_allclose(run(g, {"x": x})["output"], (x @ w.T + b) @ w.T + b, rtol=1e-5)


def test_weight_tying_across_modules_uses_the_owner_path():
    class Tied(Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, idx):
            return self.out(self.emb(idx))

    g = trace(Tied(), [InputSpec((2, 3), "int64")])
    assert [p.name for p in g.params] == ["emb.weight"]
    assert any(n.name == "out/matmul" for n in g.nodes)


def test_a_shared_module_called_inside_another_keeps_its_own_path():
    class Block(Module):
        def __init__(self, proj: Module) -> None:
            super().__init__()
            self.proj = proj
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.proj(x))

    class Net(Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 3)
            self.block = Block(self.head)

        def forward(self, x):
            return self.head(self.block(x))

    g = trace(Net(), [(2, 3)])
    names = [n.name for n in g.nodes]
    assert names[:3] == ["head/transpose", "head/matmul", "head/add"]
    assert "block.act/relu" in names and "head/matmul_1" in names
    assert [p.name for p in g.params] == ["head.weight", "head.bias"]
