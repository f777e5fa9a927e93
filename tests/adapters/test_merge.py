"""Model merging: task vectors, task arithmetic, TIES, graph merging and compatibility errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import DTypeError, GraphError, OpError, ShapeError
from lbdl_graph.frontends.zoo import GPT, ZOO
from lbdl_graph.frontends.zoo.gpt import GPT_TINY
from lbdl_graph.passes.lora import add_lora, merge_lora
from lbdl_graph.passes.merge import (
    add_task_vectors,
    merge_graphs,
    task_arithmetic,
    task_vector,
    ties_merge,
)

from .helpers import batch, gpt

F32 = np.float32


def _params(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": (scale * rng.standard_normal((5, 3))).astype(F32),
            "b": (scale * rng.standard_normal(3)).astype(F32),
            "steps": np.array(7, np.int64)}


def _finetune(base: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    delta = _params(seed, 0.1)
    return {n: (a + delta[n]).astype(a.dtype) if a.dtype.kind == "f" else a.copy()
            for n, a in base.items()}


def test_task_arithmetic_adds_and_subtracts_tasks() -> None:
    base = _params(0)
    ft1, ft2 = _finetune(base, 1), _finetune(base, 2)
    tau1 = task_vector(base, ft1)
    assert set(tau1) == {"w", "b"} and tau1["w"].dtype == np.float64
    # adding a task then subtracting it returns the base exactly
    for n, a in task_arithmetic(base, [ft1, ft1], weights=[1.0, -1.0]).items():
        np.testing.assert_array_equal(a, base[n])
    added = add_task_vectors(base, [tau1])
    for n in ("w", "b"):
        np.testing.assert_array_equal(added[n], ft1[n])  # θ + (θ1 - θ) rounds back to θ1
    back = add_task_vectors(added, [tau1], weights=-1.0)
    for n, a in back.items():
        np.testing.assert_allclose(a, base[n], rtol=0, atol=1e-6)
        assert a.dtype == base[n].dtype
    both = task_arithmetic(base, [ft1, ft2], weights=0.5)
    want = base["w"].astype(np.float64) + 0.5 * (tau1["w"] + task_vector(base, ft2)["w"])
    np.testing.assert_array_equal(both["w"], want.astype(F32))
    np.testing.assert_array_equal(both["steps"], base["steps"])


def _ties_reference(base: dict[str, np.ndarray], fts: list[dict[str, np.ndarray]],
                    density: float, lam: float, per_tensor: bool) -> dict[str, np.ndarray]:
    """TIES written out on flat vectors: trim by sorted magnitude, sum-elected sign,
    disjoint mean."""
    names = [n for n in base if base[n].dtype.kind == "f"]
    groups = [[n] for n in names] if per_tensor else [names]
    out = {n: base[n].astype(np.float64).copy() for n in names}
    for group in groups:
        taus = []
        for ft in fts:
            tau = np.concatenate([(ft[n].astype(np.float64) - base[n]).ravel() for n in group])
            k = int(np.ceil(density * tau.size))
            kth = np.sort(np.abs(tau))[::-1][k - 1]
            taus.append(np.where(np.abs(tau) >= kth, tau, 0.0))
        t = np.array(taus)
        elected = np.sign(t.sum(0))
        merged = np.zeros(t.shape[1])
        for j in range(t.shape[1]):
            keep = [v for v in t[:, j] if v != 0 and np.sign(v) == elected[j]]
            merged[j] = np.mean(keep) if keep else 0.0
        i = 0
        for n in group:
            size = base[n].size
            out[n] += lam * merged[i:i + size].reshape(base[n].shape)
            i += size
    return {n: a.astype(base[n].dtype) for n, a in out.items()}


def test_ties_on_hand_made_task_vectors() -> None:
    base = {"a": np.ones(4, F32), "b": np.zeros((2, 2), F32), "c": np.zeros(2, F32)}
    taus = [{"a": [3, -1, 0.5, 0], "b": [[2, 0], [0, -4]], "c": [0.1, -0.2]},
            {"a": [-2, -2.5, 1, 0], "b": [[1.5, 0.7], [0, 3]], "c": [0.2, 0.1]},
            {"a": [1, 3, -0.2, 0], "b": [[-5, 0.1], [0, 1]], "c": [-0.3, 0.05]}]
    fts = [{n: (base[n] + np.asarray(t[n], F32)).astype(F32) for n in base} for t in taus]
    got = ties_merge(base, fts, density=0.4, lam=1.0)
    # by hand: top 4 of 10 entries per task; a0: +3, -2, +1 -> sign +, mean(3, 1) = 2;
    # a1: -1, -2.5, +3 -> sign -, mean(-1, -2.5); b00: 2, 1.5, -5 -> sign -, -5;
    # b11: -4, 3, 1 -> sum 0, nothing merged; c is trimmed away everywhere
    np.testing.assert_allclose(got["a"], [3.0, -0.75, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(got["b"], [[-5.0, 0.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(got["c"], [0.0, 0.0])
    for per_tensor in (False, True):
        for density, lam in ((0.4, 1.0), (0.5, 0.7), (1.0, 1.0)):
            got = ties_merge(base, fts, density, lam, per_tensor=per_tensor)
            want = _ties_reference(base, fts, density, lam, per_tensor)
            for n in base:
                np.testing.assert_allclose(got[n], want[n], rtol=1e-6, atol=1e-7)
    assert np.abs(ties_merge(base, fts, 0.4, per_tensor=True)["c"]).sum() > 0


def test_ties_on_random_parameter_sets_matches_the_reference() -> None:
    base = _params(0)
    fts = [_finetune(base, s) for s in (1, 2, 3)]
    got = ties_merge(base, fts, density=0.2, lam=1.5)
    want = _ties_reference(base, fts, 0.2, 1.5, per_tensor=False)
    for n in ("w", "b"):
        np.testing.assert_allclose(got[n], want[n], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["steps"], base["steps"])


def test_incompatible_parameter_sets_raise_typed_errors() -> None:
    base = _params(0)
    other = {"w": base["w"], "bias": base["b"], "steps": base["steps"]}
    with pytest.raises(GraphError, match=r"different architecture.*missing \['b'\].*"
                                         r"unexpected \['bias'\]"):
        task_vector(base, other)
    with pytest.raises(ShapeError, match=r"b \[4\] vs base \[3\]"):
        task_arithmetic(base, [_finetune(base, 1), {**base, "b": np.zeros(4, F32)}])
    with pytest.raises(DTypeError, match=r"w float64 vs base float32"):
        ties_merge(base, [{**base, "w": base["w"].astype(np.float64)}])
    with pytest.raises(DTypeError, match=r"non-float parameter 'steps'"):
        task_vector(base, {**base, "steps": np.array(8, np.int64)})
    with pytest.raises(ShapeError, match="3 weights for 2"):
        task_arithmetic(base, [base, base], weights=[1, 2, 3])
    with pytest.raises(ShapeError, match="density"):
        ties_merge(base, [base], density=0.0)
    with pytest.raises(OpError, match="no fine-tuned"):
        task_arithmetic(base, [])


def test_merge_graphs_of_lora_fine_tunes() -> None:
    _, g, _ = gpt()
    fts = []
    for seed in (1, 2):  # two "tasks": LoRA fine-tunes with their own adapters, merged
        lg = add_lora(g, rank=2, seed=seed).graph
        rng = np.random.default_rng(seed)
        lg = lg.with_params({p.name: (0.1 * rng.standard_normal(p.data.shape)).astype(F32)
                             for p in lg.params if p.name.endswith(".lora_B")})
        fts.append(merge_lora(lg).graph)
    merged = merge_graphs(g, fts, weights=[1.0, 1.0])
    assert str(merged) == str(g)
    w = "layers.0.attn.out_proj.weight"
    want = (g.param_map[w].data.astype(np.float64)
            + sum(f.param_map[w].data.astype(np.float64) - g.param_map[w].data for f in fts))
    np.testing.assert_allclose(merged.param_map[w].data, want, atol=1e-6)
    np.testing.assert_array_equal(merged.param_map["head.weight"].data,
                                  g.param_map["head.weight"].data)
    ties = merge_graphs(g, fts, method="ties", density=0.5)
    assert np.isfinite(run(ties, {"idx": batch()["idx"]})["output"]).all()
    back = merge_graphs(g, [fts[0], fts[0]], weights=[1.0, -1.0])
    for p in g.params:
        np.testing.assert_array_equal(back.param_map[p.name].data, p.data)


def test_merge_graphs_rejects_other_architectures() -> None:
    _, g, _ = gpt()
    other = ZOO["transformer_tiny"]
    with pytest.raises(GraphError, match=r"'Transformer' into 'gpt_tiny': different structure"):
        merge_graphs(g, [other.trace(other.model()).replace(name="Transformer")])
    wide = ZOO["gpt_tiny"].trace(GPT(replace(GPT_TINY, vocab_size=40)))
    with pytest.raises(ShapeError, match=r"tok_emb\.weight \[40, 16\] vs base \[32, 16\]"):
        merge_graphs(g, [wide])
    with pytest.raises(OpError, match="unknown merge method"):
        merge_graphs(g, [g], method="average")
    with pytest.raises(OpError, match=r"unknown option\(s\) \['density'\]"):
        merge_graphs(g, [g], density=0.5)
