"""The contrastive losses: ``F.triplet_margin_loss`` (the book's section 3.1) and ``F.info_nce``
(CLIP's loss) against PyTorch, their gradients through our autodiff, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import ShapeError
from lbdl_graph.frontends import F, InputSpec, Tensor, trace
from lbdl_graph.passes.autodiff import grad

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _data(n: int = 6, d: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, d)).astype(np.float32) for _ in range(3)]


def _run(fn: object, *arrays: np.ndarray) -> np.ndarray:
    specs = [InputSpec(("N", *a.shape[1:]), a.dtype, f"in{i}") for i, a in enumerate(arrays)]
    g = trace(fn, specs)
    return run(g, {f"in{i}": a for i, a in enumerate(arrays)})["output"]


@pytest.mark.parametrize(("p", "swap", "reduction"), [(2.0, False, "mean"), (1.0, True, "sum"),
                                                      (3.0, False, "none")])
def test_triplet_margin_loss_matches_torch(p: float, swap: bool, reduction: str) -> None:
    a, pos, neg = _data()
    ours = _run(lambda x, y, z: F.triplet_margin_loss(x, y, z, margin=1.5, p=p, swap=swap,
                                                      reduction=reduction), a, pos, neg)
    ref = TF.triplet_margin_loss(*(torch.from_numpy(v) for v in (a, pos, neg)), margin=1.5,
                                 p=p, swap=swap, reduction=reduction)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_triplet_margin_loss_is_zero_when_negatives_are_far_enough() -> None:
    a = np.zeros((3, 2), np.float32)
    pos, neg = a + 0.1, a + 5.0
    assert float(_run(lambda x, y, z: F.triplet_margin_loss(x, y, z), a, pos, neg)) == 0.0


def _torch_info_nce(q: np.ndarray, k: np.ndarray, t: float, symmetric: bool,
                    reduction: str) -> np.ndarray:
    qt, kt = TF.normalize(torch.from_numpy(q), dim=-1), TF.normalize(torch.from_numpy(k), dim=-1)
    logits = qt @ kt.T / t
    target = torch.arange(len(q))
    loss = TF.cross_entropy(logits, target, reduction="none")
    if symmetric:
        loss = (loss + TF.cross_entropy(logits.T, target, reduction="none")) / 2
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction].numpy()


@pytest.mark.parametrize(("symmetric", "reduction"), [(True, "mean"), (False, "mean"),
                                                      (True, "none"), (False, "sum")])
def test_info_nce_matches_torch_cross_entropy_on_the_diagonal(symmetric: bool,
                                                              reduction: str) -> None:
    q, k, _ = _data(n=7, d=4, seed=1)
    ours = _run(lambda x, y: F.info_nce(x, y, 0.1, symmetric=symmetric, reduction=reduction),
                q, k)
    np.testing.assert_allclose(ours, _torch_info_nce(q, k, 0.1, symmetric, reduction),
                               rtol=1e-5, atol=1e-6)


def test_info_nce_gradient_reaches_a_learned_temperature() -> None:
    q, k, _ = _data(n=5, d=3, seed=2)
    log_t = np.float32(np.log(0.2))

    def fn(x: Tensor, y: Tensor, lt: Tensor) -> Tensor:
        return F.info_nce(x, y, lt.exp())

    g = grad(trace(fn, {"x": q, "y": k, "lt": np.asarray(log_t)}), "output", ["lt", "x"])
    out = run(g, {"x": q, "y": k, "lt": np.asarray(log_t)})
    tq = torch.from_numpy(q).requires_grad_()
    tl = torch.tensor(log_t, requires_grad=True)
    qn, kn = TF.normalize(tq, dim=-1), TF.normalize(torch.from_numpy(k), dim=-1)
    logits = qn @ kn.T / tl.exp()
    target = torch.arange(len(q))
    loss = (TF.cross_entropy(logits, target) + TF.cross_entropy(logits.T, target)) / 2
    loss.backward()
    np.testing.assert_allclose(out["output"], loss.item(), rtol=1e-5)
    np.testing.assert_allclose(out["grad:lt"], tl.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["grad:x"], tq.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_contrastive_losses_reject_mismatched_shapes() -> None:
    with pytest.raises(ShapeError, match="info_nce"):
        trace(lambda x, y: F.info_nce(x, y), {"x": (4, 3), "y": (5, 3)})
    with pytest.raises(ShapeError, match="info_nce"):
        trace(lambda x, y: F.info_nce(x, y), {"x": (4, 3), "y": (4, 2)})
    with pytest.raises(ShapeError, match="triplet_margin_loss"):
        trace(lambda x, y, z: F.triplet_margin_loss(x, y, z),
              {"x": (4, 3), "y": (4, 3), "z": (4, 2)})
