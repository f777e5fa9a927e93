"""Siamese networks: ``F.pairwise_distance`` and ``F.contrastive_loss`` (values and gradients
against PyTorch where present and against central differences), the triplet margin loss's
gradient, and the zoo ``Siamese``'s weight sharing: one set of parameters in the traced
training graph, read by every branch, with the branch gradients summed."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.errors import OpError, ShapeError
from lbdl_graph.frontends import F, InputSpec, Module, Tensor, manual_seed, trace
from lbdl_graph.frontends.training import compile_training
from lbdl_graph.frontends.zoo import Siamese, SiameseConfig
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.optim import SGD


def _pairs(n: int = 6, d: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, n, d))
    b[::3] = a[::3] + 0.01 * b[::3]  # some near-identical pairs
    y = (np.arange(n) % 2).astype(np.float64)
    return a, b, y


def _contrastive_ref(a: np.ndarray, b: np.ndarray, y: np.ndarray, margin: float,
                     eps: float = 1e-6) -> np.ndarray:
    d = np.sqrt(((a - b + eps) ** 2).sum(-1))
    return 0.5 * (y * d ** 2 + (1 - y) * np.maximum(0.0, margin - d) ** 2)


def _loss_graph(fn: Any, arrays: dict[str, np.ndarray]) -> Any:
    specs = {k: InputSpec(("N", *v.shape[1:]), v.dtype, k) for k, v in arrays.items()}
    return trace(fn, specs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_contrastive_loss_matches_the_formula(reduction: str) -> None:
    a, b, y = _pairs()
    g = _loss_graph(lambda a, b, y: F.contrastive_loss(a, b, y, margin=2.0, reduction=reduction),
                    {"a": a, "b": b, "y": y})
    per_pair = _contrastive_ref(a, b, y, 2.0)
    ref = {"mean": per_pair.mean(), "sum": per_pair.sum(), "none": per_pair}[reduction]
    np.testing.assert_allclose(run(g, {"a": a, "b": b, "y": y})["output"], ref, rtol=1e-12)


def test_contrastive_loss_ignores_different_pairs_beyond_the_margin() -> None:
    a = np.zeros((3, 2))
    b = a + np.array([3.0, 0.0])
    g = _loss_graph(lambda a, b, y: F.contrastive_loss(a, b, y), {"a": a, "b": b, "y": a[:, 0]})
    assert float(run(g, {"a": a, "b": b, "y": np.zeros(3)})["output"]) == 0.0
    assert float(run(g, {"a": a, "b": b, "y": np.ones(3)})["output"]) == pytest.approx(4.5)


def _check_fd(fn: Any, arrays: dict[str, np.ndarray], wrt: list[str]) -> None:
    """Analytic gradients of the scalar ``fn`` against central differences (float64)."""
    g = grad(_loss_graph(fn, arrays), "output", wrt)
    out = run(g, arrays)
    rng = np.random.default_rng(3)
    for k in wrt:
        d = rng.standard_normal(arrays[k].shape)
        h = 1e-6
        plus = run(_loss_graph(fn, arrays), {**arrays, k: arrays[k] + h * d})["output"]
        minus = run(_loss_graph(fn, arrays), {**arrays, k: arrays[k] - h * d})["output"]
        fd = float(plus - minus) / (2 * h)
        assert float((out[f"grad:{k}"] * d).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-8), k


def test_contrastive_loss_gradient_matches_finite_differences() -> None:
    a, b, y = _pairs(seed=1)
    _check_fd(lambda a, b, y: F.contrastive_loss(a, b, y, margin=2.5), {"a": a, "b": b, "y": y},
              ["a", "b"])


def test_triplet_margin_loss_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(2)
    a, p, n = rng.standard_normal((3, 5, 4))
    _check_fd(lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=2.0),
              {"a": a, "p": p, "n": n}, ["a", "p", "n"])


def _distance_fn(p: float) -> Any:
    return lambda a, b: F.pairwise_distance(a, b, p=p)


def test_pairwise_distance_and_losses_match_torch() -> None:
    torch = pytest.importorskip("torch")
    a, b, y = _pairs(seed=4)
    rng = np.random.default_rng(5)
    neg = rng.standard_normal(a.shape)
    for p in (1.0, 2.0, 3.0):
        g = _loss_graph(_distance_fn(p), {"a": a, "b": b})
        ref = torch.nn.functional.pairwise_distance(torch.from_numpy(a), torch.from_numpy(b), p=p)
        np.testing.assert_allclose(run(g, {"a": a, "b": b})["output"], ref.numpy(), rtol=1e-12)
    ta, tb, tn = (torch.tensor(v, requires_grad=True) for v in (a, b, neg))
    d = torch.nn.functional.pairwise_distance(ta, tb)
    ty = torch.from_numpy(y)
    contrastive = (0.5 * (ty * d ** 2 + (1 - ty) * torch.relu(2.0 - d) ** 2)).mean()
    triplet = torch.nn.functional.triplet_margin_loss(ta, tb, tn, margin=2.0)
    (contrastive + triplet).backward()

    def ours(a: Tensor, b: Tensor, n: Tensor, y: Tensor) -> Tensor:
        return (F.contrastive_loss(a, b, y, margin=2.0)
                + F.triplet_margin_loss(a, b, n, margin=2.0))

    feeds = {"a": a, "b": b, "n": neg, "y": y}
    out = run(grad(_loss_graph(ours, feeds), "output", ["a", "b", "n"]), feeds)
    np.testing.assert_allclose(out["output"], (contrastive + triplet).item(), rtol=1e-10)
    for k, t in (("a", ta), ("b", tb), ("n", tn)):
        np.testing.assert_allclose(out[f"grad:{k}"], t.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_contrastive_loss_rejects_bad_input() -> None:
    with pytest.raises(ShapeError, match="contrastive_loss: target"):
        trace(lambda a, b, y: F.contrastive_loss(a, b, y), {"a": (4, 3), "b": (4, 3), "y": (4, 3)})
    with pytest.raises(ShapeError, match="contrastive_loss"):
        trace(lambda a, b, y: F.contrastive_loss(a, b, y), {"a": (4, 3), "b": (4, 2), "y": (4,)})
    with pytest.raises(OpError, match="margin must be > 0"):
        trace(lambda a, b, y: F.contrastive_loss(a, b, y, margin=0.0),
              {"a": (4, 3), "b": (4, 3), "y": (4,)})
    with pytest.raises(OpError, match="p must be > 0"):
        trace(lambda a, b: F.pairwise_distance(a, b, p=0.0), {"a": (4, 3), "b": (4, 3)})


# ---------------------------------------------------------------- shared weights


def _net(seed: int = 0) -> Siamese:
    manual_seed(seed)
    return Siamese(SiameseConfig(channels=(3,), hidden=8, embed_dim=4)).double()  # type: ignore[return-value]


def _images(k: int, n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 1, 8, 8)) for _ in range(k)]


IMG = InputSpec(("N", 1, 8, 8), "float64")


class _Untied(Module):
    """Three independent copies of one net (same starting weights, separate parameters)."""

    def __init__(self, net: Siamese) -> None:
        super().__init__()
        self.a, self.p, self.n = (copy.deepcopy(net) for _ in range(3))


def test_triplet_branches_share_one_set_of_parameters_and_sum_their_gradients() -> None:
    net = _net()
    names = [k for k, _ in net.named_parameters()]

    def shared(a: Tensor, p: Tensor, n: Tensor) -> Tensor:
        return F.triplet_margin_loss(net.embed(a), net.embed(p), net.embed(n), margin=3.0)

    g = trace(shared, {"a": IMG, "p": IMG, "n": IMG}, module=net, training=True)
    assert sorted(v.name for v in g.params) == sorted(names)  # each parameter once
    users = g.consumers
    for v in g.params:
        assert len(users[v.value]) == 3, f"{v.name}: {len(users[v.value])} readers, not 3"

    untied = _Untied(net)

    def separate(a: Tensor, p: Tensor, n: Tensor) -> Tensor:
        return F.triplet_margin_loss(untied.a.embed(a), untied.p.embed(p), untied.n.embed(n),
                                     margin=3.0)

    gu = trace(separate, {"a": IMG, "p": IMG, "n": IMG}, module=untied, training=True)
    a, p, n = _images(3)
    feeds = {"a": a, "p": p, "n": n}
    out = run(grad(g, "output", names), feeds)
    branch = run(grad(gu, "output", [f"{b}.{k}" for b in "apn" for k in names]), feeds)
    assert float(out["output"]) > 0  # the margin is not met: every branch gets a gradient
    np.testing.assert_allclose(out["output"], branch["output"], rtol=1e-12)
    for k in names:
        parts = [branch[f"grad:{b}.{k}"] for b in "apn"]
        assert all(np.abs(q).max() > 0 for q in parts), k
        np.testing.assert_allclose(out[f"grad:{k}"], sum(parts), rtol=1e-9, atol=1e-12)


class _Pairs(Module):
    def __init__(self, net: Siamese) -> None:
        super().__init__()
        self.net = net

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.embed(x1), self.net.embed(x2)


def test_compiled_training_step_updates_shared_weights_by_the_summed_gradient() -> None:
    net = _net(1)
    x1, x2 = _images(2, n=6, seed=1)
    y = np.array([1, 0, 1, 0, 0, 1], np.float64)

    def loss(out: tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        return F.contrastive_loss(out[0], out[1], target, margin=2.0)

    before = {k: v.copy() for k, v in net.state_dict().items()}
    step, _ = compile_training(_Pairs(net), {"x1": x1, "x2": x2}, y, loss=loss,
                               optimizer=SGD(lr=0.1))
    assert sorted(step.info.params) == sorted(f"net.{k}" for k in before)
    runner = NumpyStepRunner(step.graph, step.info.state, step.initial_state)
    runner.step({"x1": x1, "x2": x2, "y": y})
    after = runner.state()

    # the reference: two untied copies, each branch's gradient on its own, then summed
    untied = _Untied(net)
    gu = trace(lambda x1, x2, y: F.contrastive_loss(untied.a.embed(x1), untied.p.embed(x2), y,
                                                    margin=2.0),
               {"x1": IMG, "x2": IMG, "y": InputSpec(("N",), "float64")}, module=untied,
               training=True)
    ref = run(grad(gu, "output", [f"{b}.{k}" for b in "ap" for k in before]),
              {"x1": x1, "x2": x2, "y": y})
    for k, w in before.items():
        expected = w - 0.1 * (ref[f"grad:a.{k}"] + ref[f"grad:p.{k}"])
        np.testing.assert_allclose(after[f"net.{k}"], expected, rtol=1e-7, atol=1e-9)  # f32 lr


def test_features_embedding_is_the_unit_conv_features_below_the_head() -> None:
    manual_seed(0)
    c = SiameseConfig(pool_stages=1, dropout=0.3, embed_layer="features", normalize=True)
    net = Siamese(c)
    assert c.flat_features() == 32 * 4 * 4
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    emb = trace(lambda x: net.embed(x), {"x": ("N", 1, 8, 8)}, module=net, training=False)
    proj = trace(lambda x: net.project(x), {"x": ("N", 1, 8, 8)}, module=net, training=False)
    feats = trace(lambda x: net.flatten(net.features(x)), {"x": ("N", 1, 8, 8)}, module=net,
                  training=False)
    e, p, f = (run(g, {"x": x}, training=False)["output"] for g in (emb, proj, feats))
    assert e.shape == (5, 512) and p.shape == (5, 16)
    np.testing.assert_allclose(e, f / np.linalg.norm(f, axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-6)


def test_config_rejects_bad_pooling_and_embedding_layer() -> None:
    with pytest.raises(OpError, match="pool_stages"):
        Siamese(SiameseConfig(pool_stages=3, image_size=16))
    with pytest.raises(OpError, match="embed_layer"):
        Siamese(SiameseConfig(embed_layer="hidden"))
