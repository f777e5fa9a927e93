"""fit() and the compiled step on a Graph: tying twice-stored weights, parity with training the
Module the graph was traced from, errors; and one SGD step on a legacy ONNX export of a
transformers GPT-2 against torch's (skipped without torch/transformers)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph import ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import InputError
from lbdl_graph.frontends import manual_seed, nn, trace
from lbdl_graph.frontends.training import compile_training, fit
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import SGD, Adam
from lbdl_graph.passes.tie_params import tie_params, tie_params_pass


def tied_lm(vocab: int = 12, d: int = 6) -> Graph:
    """An embedding and a vocabulary head stored as two parameters: the table and its
    transpose (as a legacy GPT-2 export stores them), plus a zero bias and a copy of it."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((vocab, d)).astype(np.float32)
    b = GraphBuilder("lm")
    with b:
        idx = b.input("idx", "int64", (4,))
        w = b.param("wte", table)
        wt = b.param("head_t", table.T.copy())
        b1 = b.param("b1", np.zeros(d, np.float32))
        b2 = b.param("b2", np.zeros(d, np.float32))
        h = ops.add(ops.add(ops.gather(w, idx, axis=0), b1), b2)
        logits = ops.matmul(ops.tanh(h), wt)
    return b.build({"logits": logits})


def test_tie_params_ties_the_transposed_copy_only() -> None:
    g = tied_lm()
    rep = tie_params(g)
    assert rep.tied == {"head_t": "transpose(wte)"}  # zero biases are equal but never tied
    assert sorted(p.name for p in rep.graph.params) == ["b1", "b2", "wte"]
    assert rep.graph.metadata["tied_params"] == {"head_t": "transpose(wte)"}
    idx = np.array([0, 3, 5, 11])
    np.testing.assert_allclose(run(rep.graph, {"idx": idx})["logits"],
                               run(g, {"idx": idx})["logits"], rtol=0, atol=1e-6)
    res = tie_params_pass(g)
    assert res.changed and dict(res.stats) == {"transpose": 1}
    again = tie_params_pass(res.graph)
    assert not again.changed and again.graph is res.graph


def test_exact_copies_are_tied() -> None:
    b = GraphBuilder("copies")
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    with b:
        x = b.input("x", "float32", (3, 2))
        y = ops.add(ops.matmul(x, b.param("a", w)), ops.matmul(x, b.param("b", w.copy())))
    g = b.build({"y": y})
    rep = tie_params(g)
    assert rep.tied == {"b": "a"}
    assert [p.name for p in rep.graph.params] == ["a"]
    w2 = w.copy()
    w2[0, 0] = -0.0  # 0.0 and -0.0 differ in bits: not the same tensor
    assert tie_params(g.with_params({"b": w2})).tied == {}


def test_fit_on_a_graph_ties_by_default_and_reports() -> None:
    g = tied_lm()
    rng = np.random.default_rng(1)
    idx, y = rng.integers(0, 12, (8, 4)), rng.integers(0, 12, (8, 4))
    x = idx.reshape(-1)[:4]
    h = fit(g, x, y[0], optimizer=SGD(0.5), batch_size=4, shuffle=False)
    assert h.tied == {"head_t": "transpose(wte)"}
    assert h.graph is not None and "head_t" not in h.graph.param_map
    untied = fit(g, x, y[0], optimizer=SGD(0.5), batch_size=4, shuffle=False, tie_weights=False)
    assert untied.tied == {} and untied.graph is not None
    # untied, the head copy moves on its own: it no longer equals the table's transpose
    p = untied.graph.param_arrays()
    assert np.abs(p["head_t"] - p["wte"].T).max() > 1e-3
    # tied, the trained graph computes what the original layout with the table written twice
    # computes (the transpose is still the table's)
    w = h.graph.param_arrays()["wte"]
    again = g.with_params({"wte": w, "head_t": w.T.copy(), **{k: v for k, v in
                           h.graph.param_arrays().items() if k in ("b1", "b2")}})
    np.testing.assert_allclose(run(again, {"idx": x})["logits"],
                               run(h.graph, {"idx": x})["logits"], rtol=0, atol=1e-6)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 16), nn.Linear(16, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc2(self.fc1(x).relu())


def test_fit_on_a_traced_graph_matches_fit_on_the_module() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    manual_seed(0)
    model = MLP()
    g = trace(model, [("N", 5)], training=False)
    hg = fit(g, x, y, optimizer=Adam(1e-2), epochs=2, batch_size=16, metrics=["accuracy"],
             validation_split=0.25)
    hm = fit(model, x, y, optimizer=Adam(1e-2), epochs=2, batch_size=16, metrics=["accuracy"],
             validation_split=0.25)
    assert hg.tied == {}
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(hg[k], hm[k], rtol=1e-6)
    assert hg.graph is not None
    for name, arr in model.state_dict().items():
        np.testing.assert_allclose(hg.graph.param_arrays()[name], arr, rtol=0, atol=1e-6)


def test_compiled_step_of_a_graph() -> None:
    step, ev = compile_training(tied_lm(), None, np.zeros((4,), np.int64), optimizer=SGD(0.1))
    assert step.graph.metadata["tied_params"] == {"head_t": "transpose(wte)"}
    assert set(step.info.params) == {"wte", "b1", "b2"}
    assert {v.name for v in ev.inputs} >= {"idx", "y", "wte"}


def test_graph_errors_name_the_problem() -> None:
    g = tied_lm()
    y = np.zeros((4, 4), np.int64)
    with pytest.raises(InputError, match="fixed batch of 4: use batch_size=4"):
        fit(g, np.zeros((8,), np.int64), np.zeros((8,), np.int64), batch_size=8)
    with pytest.raises(InputError, match="multiples"):
        fit(g, np.zeros((6,), np.int64), np.zeros((6,), np.int64), batch_size=4)
    with pytest.raises(InputError, match="missing \\['idx'\\], unexpected \\['ids'\\]"):
        fit(g, {"ids": np.zeros((4,), np.int64)}, y, batch_size=4)
    with pytest.raises(InputError, match="input 'idx' of graph 'lm' is i64"):
        fit(g, np.zeros((4,), np.float32), y, batch_size=4)
    with pytest.raises(InputError, match="no output 'probs'; outputs: \\['logits'\\]"):
        fit(g, np.zeros((4,), np.int64), y, batch_size=4, output="probs")
    frozen = g.replace(params=[p.__class__(p.value, p.data, False) for p in g.params])
    with pytest.raises(InputError, match="no trainable parameters"):
        fit(frozen, np.zeros((4,), np.int64), y, batch_size=4)


def test_several_outputs_need_output_name() -> None:
    b = GraphBuilder("two")
    with b:
        x = b.input("x", "float32", ("N", 3))
        h = ops.matmul(x, b.param("w", np.arange(12, dtype=np.float32).reshape(3, 4) / 10))
        z = ops.relu(h)
    g = b.build({"h": h, "z": z})
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 4), np.float32)
    with pytest.raises(InputError, match="outputs \\['h', 'z'\\]; name the one"):
        fit(g, x, y, loss="mse")
    h_ = fit(g, x, y, loss="mse", output="z", optimizer=SGD(0.1), batch_size=8)
    assert h_.graph is not None and h_["loss"][0] > 0


# ---- a real export: GPT-2 from transformers, legacy torch.onnx.export ----


def export_gpt2(path: Path) -> tuple[object, np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                  use_cache=False, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # a trained model has no two equal biases (the exporter merges those)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))

    class Logits(torch.nn.Module):
        def __init__(self, m: object) -> None:
            super().__init__()
            self.m = m

        def forward(self, ids):  # type: ignore[no-untyped-def]
            return self.m(ids, attention_mask=torch.ones_like(ids), use_cache=False,
                          return_dict=False)[0]

    ids, y = torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8))
    wrapped = Logits(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (ids,), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids"], output_names=["logits"])
    return wrapped, ids.numpy(), y.numpy()


def test_one_sgd_step_on_imported_gpt2_matches_torch(tmp_path: Path) -> None:
    from lbdl_graph.frontends.onnx import import_onnx

    torch = pytest.importorskip("torch")
    wrapped, ids, y = export_gpt2(tmp_path / "gpt2.onnx")
    g = import_onnx(tmp_path / "gpt2.onnx")
    h = fit(g, ids, y, optimizer=SGD(0.1), batch_size=2, shuffle=False)
    untied = fit(g, ids, y, optimizer=SGD(0.1), batch_size=2, shuffle=False, tie_weights=False)
    (copy, kept), = h.tied.items()
    assert kept == "transpose(m.transformer.wte.weight)" and copy.startswith("onnx::")

    logits = wrapped(torch.from_numpy(ids))  # type: ignore[operator]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), torch.from_numpy(y)
                                             .reshape(-1))
    np.testing.assert_allclose(h["loss"][0], loss.item(), rtol=1e-6)
    loss.backward()
    ref = {}
    with torch.no_grad():
        for name, p in wrapped.named_parameters():  # type: ignore[attr-defined]
            ref[name] = (p - 0.1 * p.grad).numpy()
    assert h.graph is not None and untied.graph is not None
    got = h.graph.param_arrays()
    assert sorted(got) == sorted(ref)  # every torch parameter, once
    err = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    assert err < 1e-6
    # without tying, the table and its stored transpose are updated apart
    loose = untied.graph.param_arrays()
    assert float(np.abs(loose["m.transformer.wte.weight"]
                        - ref["m.transformer.wte.weight"]).max()) > 1e-3
