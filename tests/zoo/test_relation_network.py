"""The zoo's RelationNetwork: a symbolic object count, invariance to the order of the objects,
the broadcast pair tensor against explicit concatenated pairs in NumPy, gradients against
central differences and ONNX Runtime against NumPy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.backends.numpy import Interpreter, run
from lbdl_graph.backends.onnx import OrtRunner, save_onnx
from lbdl_graph.errors import OpError
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.zoo import ZOO, RelationNetwork, RelationNetworkConfig
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad

CONFIG = RelationNetworkConfig(object_dim=5, question_dim=4, g_hidden=(8, 6), f_hidden=(7,),
                               num_answers=3)


def _model(dtype: str = "float32") -> tuple[RelationNetwork, Graph]:
    manual_seed(0)
    m = RelationNetwork(CONFIG)
    if dtype == "float64":
        m = m.double()
    specs = {"objects": InputSpec(("N", "S", 5), dtype), "question": InputSpec(("N", 4), dtype)}
    return m, trace(m, specs, training=False)


def _inputs(n: int, s: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"objects": rng.standard_normal((n, s, 5)).astype(np.float32),
            "question": rng.standard_normal((n, 4)).astype(np.float32)}


def _numpy_reference(m: RelationNetwork, objects: np.ndarray, question: np.ndarray
                     ) -> np.ndarray:
    """Santoro's formula written out: g over every concatenated pair [o_i, o_j, q], summed."""
    sd = {k: np.asarray(v, np.float64) for k, v in m.state_dict().items()}
    w1 = np.concatenate([sd["g_left.weight"], sd["g_right.weight"], sd["g_question.weight"]], 1)
    out = []
    for o, q in zip(objects.astype(np.float64), question.astype(np.float64), strict=True):
        total = np.zeros(CONFIG.g_hidden[-1])
        for oi in o:
            for oj in o:
                h = np.maximum(np.concatenate([oi, oj, q]) @ w1.T + sd["g_left.bias"], 0)
                h = np.maximum(h @ sd["g.0.weight"].T + sd["g.0.bias"], 0)
                total += h
        h = np.maximum(total @ sd["f.0.weight"].T + sd["f.0.bias"], 0)
        out.append(h @ sd["f.2.weight"].T + sd["f.2.bias"])
    return np.array(out)


def test_object_count_is_a_symbolic_dim() -> None:
    _, g = _model()
    assert tuple(g.inputs[0].type.shape) == ("N", "S", 5)
    assert tuple(g.outputs[0].type.shape) == ("N", 3)
    for n, s in ((1, 1), (3, 4), (2, 9)):
        assert run(g, _inputs(n, s))["output"].shape == (n, 3)
    assert not any(n.op.name == "loop" for n in g.nodes)


def test_broadcast_pairs_match_explicit_concatenated_pairs() -> None:
    m, g = _model()
    x = _inputs(3, 4, seed=1)
    np.testing.assert_allclose(run(g, x)["output"], _numpy_reference(m, **x),
                               rtol=1e-4, atol=1e-4)


def test_answers_do_not_depend_on_the_order_of_the_objects() -> None:
    _, g = _model()
    x = _inputs(4, 6, seed=2)
    base = run(g, x)["output"]
    rng = np.random.default_rng(3)
    for _ in range(3):
        perm = rng.permutation(6)
        got = run(g, {**x, "objects": x["objects"][:, perm]})["output"]
        np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-5)
    # but they do depend on the objects and the question themselves
    moved = x["objects"].copy()
    moved[:, 0] += 1.0
    assert np.abs(run(g, {**x, "objects": moved})["output"] - base).max() > 1e-3
    assert np.abs(run(g, {**x, "question": -x["question"]})["output"] - base).max() > 1e-3


def test_gradients_match_central_differences() -> None:
    """d(sum of squared logits) w.r.t. the objects and g_theta's first weight, float64."""
    m, _ = _model("float64")
    x = {k: v.astype(np.float64) for k, v in _inputs(2, 3, seed=4).items()}

    def objective(objects, question):  # type: ignore[no-untyped-def]
        return {"loss": (m(objects, question) ** 2).sum()}

    specs = {"objects": InputSpec(("N", "S", 5), "float64"),
             "question": InputSpec(("N", 4), "float64")}
    fwd = trace(objective, specs, training=False, module=m)
    params = {p.name: p.data for p in fwd.params if p.trainable}
    grads = Interpreter(grad(fwd, "loss", ["objects", "g_right.weight"])).run(x)
    interp = Interpreter(fwd)
    rng = np.random.default_rng(5)
    for key, base, is_param in (("objects", x["objects"], False),
                                ("g_right.weight", params["g_right.weight"], True)):
        d = rng.standard_normal(base.shape)
        eps = 1e-6

        def loss(v: np.ndarray, key: str = key, is_param: bool = is_param) -> float:
            if is_param:
                return float(interp.run(x, params={**params, key: v})["loss"])
            return float(interp.run({**x, key: v})["loss"])

        numeric = (loss(base + eps * d) - loss(base - eps * d)) / (2 * eps)
        analytic = float((grads[f"grad:{key}"] * d).sum())
        assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(numeric)), (key, numeric, analytic)


def test_onnx_runtime_matches_numpy_at_several_object_counts(tmp_path: Path) -> None:
    _, g = _model()
    runner = OrtRunner(save_onnx(g, tmp_path / "rn.onnx", training=False))
    for s in (2, 6, 11):
        x = _inputs(5, s, seed=s)
        np.testing.assert_allclose(runner.run(x)["output"], run(g, x)["output"],
                                   rtol=1e-5, atol=1e-5)


def test_zoo_entry_and_config_errors() -> None:
    entry = ZOO["relation_network"]
    assert entry.inputs["objects"].shape == ("N", "S", 10)
    with pytest.raises(OpError, match="g_hidden"):
        RelationNetwork(RelationNetworkConfig(g_hidden=()))
