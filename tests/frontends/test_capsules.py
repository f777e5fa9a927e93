"""Capsules (Sabour et al. 2017): squash, routing-by-agreement against a plain NumPy version of
the paper's procedure 1 with the same weights, gradients through the routing rounds against
finite differences, the margin loss, ONNX Runtime against NumPy, and typed errors."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import Interpreter, run
from lbdl_graph.errors import DTypeError, LbdlError, OpError, ShapeError
from lbdl_graph.frontends import InputSpec, Tensor, manual_seed, nn, trace
from lbdl_graph.frontends import functional as F
from lbdl_graph.frontends.zoo import CapsNet, CapsNetConfig, capsnet_loss
from lbdl_graph.passes.autodiff import grad

from .helpers import rand


def squash_ref(s: np.ndarray) -> np.ndarray:
    """Equation 1 of the paper, exactly: ``|s|^2 / (1 + |s|^2) * s / |s|``."""
    n2 = (s.astype(np.float64) ** 2).sum(-1, keepdims=True)
    return n2 / (1.0 + n2) * s / np.sqrt(n2)


def routing_ref(u: np.ndarray, w: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Procedure 1 with explicit loops over the batch and the capsules: ``u`` (N, I, Din),
    ``w`` (I, J, Dout, Din) -> (v (N, J, Dout), c (N, I, J))."""
    n, i_caps, _ = u.shape
    j_caps, d_out = w.shape[1], w.shape[2]
    v = np.zeros((n, j_caps, d_out))
    c = np.zeros((n, i_caps, j_caps))
    for b_row in range(n):
        u_hat = np.array([[w[i, j].astype(np.float64) @ u[b_row, i] for j in range(j_caps)]
                          for i in range(i_caps)])  # (I, J, Dout)
        logits = np.zeros((i_caps, j_caps))
        for _ in range(iterations):
            e = np.exp(logits - logits.max(1, keepdims=True))
            coup = e / e.sum(1, keepdims=True)
            s = np.einsum("ij,ijd->jd", coup, u_hat)
            out = squash_ref(s)
            logits = logits + np.einsum("ijd,jd->ij", u_hat, out)  # a last update is unused
        v[b_row], c[b_row] = out, coup
    return v, c


class Routed(nn.Module):
    """Primary capsules of a small image, routed to 3 capsules; outputs v and c."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.primary = nn.PrimaryCapsules(2, 3, 4, 3, stride=2, padding=1)
        self.route = nn.CapsuleRouting(3 * 3 * 3, 4, 3, 5, iterations=iterations)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        v, c = self.route.route(self.primary(x))
        return {"v": v, "c": c}


def test_squash_matches_the_formula() -> None:
    s = rand(4, 7, 16, seed=1) * np.array([0.01, 0.3, 1.0, 5.0])[:, None, None]
    g = trace(lambda x: F.squash(x), [InputSpec(s.shape, "float32", "x")])
    got = run(g, {"x": s.astype(np.float32)})["output"]
    np.testing.assert_allclose(got, squash_ref(s), rtol=2e-5, atol=1e-6)
    lengths = np.linalg.norm(got, axis=-1)
    assert lengths.max() < 1.0 and lengths[0].max() < 5e-3  # short vectors shrink to ~|s|^2
    zero = run(g, {"x": np.zeros(s.shape, np.float32)})["output"]
    assert np.all(zero == 0.0)  # the eps under the root keeps 0 finite


def test_squash_along_another_dim() -> None:
    s = rand(3, 8, 5, seed=2)
    g = trace(lambda x: F.squash(x, dim=1), [InputSpec(s.shape, "float32", "x")])
    got = run(g, {"x": s})["output"]
    np.testing.assert_allclose(got, squash_ref(s.swapaxes(1, 2)).swapaxes(1, 2), rtol=2e-5,
                               atol=1e-6)


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_routing_matches_the_numpy_procedure(iterations: int) -> None:
    manual_seed(3)
    layer = nn.CapsuleRouting(12, 4, 3, 6, iterations=iterations)
    u = squash_ref(rand(5, 12, 4, seed=4)).astype(np.float32)

    def routed(x: Tensor) -> dict[str, Tensor]:
        v, c = layer.route(x)
        return {"v": v, "c": c}

    g = trace(routed, [InputSpec(("N", 12, 4), "float32", "u")], module=layer)
    out = run(g, {"u": u})
    v_ref, c_ref = routing_ref(u, layer.weight.data, iterations)
    v, c = out["v"], out["c"]
    np.testing.assert_allclose(v, v_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c, c_ref, rtol=1e-4, atol=1e-6)
    assert np.allclose(c.sum(-1), 1.0)
    if iterations == 1:
        assert np.allclose(c, 1.0 / 3)
    else:  # agreement moved the coupling away from uniform
        assert np.abs(c - 1.0 / 3).max() > 1e-3
    # every round is in the graph: a softmax per round after the first
    assert sum(n.op.name == "softmax" for n in g.nodes) == iterations - 1


def test_primary_capsules_layout_and_squash() -> None:
    manual_seed(5)
    layer = nn.PrimaryCapsules(2, 3, 4, 3, stride=2, padding=1)
    x = rand(2, 2, 6, 6, seed=6)
    got = run(trace(layer, [InputSpec(x.shape, "float32", "x")]), {"x": x})["output"]
    conv = run(trace(layer.conv, [InputSpec(x.shape, "float32", "x")]), {"x": x})["output"]
    n, _, h, w = conv.shape  # capsule (type t, row r, col q) is channels t*4..t*4+3 at (r, q)
    ref = conv.reshape(n, 3, 4, h, w).transpose(0, 1, 3, 4, 2).reshape(n, 3 * h * w, 4)
    np.testing.assert_allclose(got, squash_ref(ref), rtol=2e-5, atol=1e-6)


def test_gradients_through_the_routing_rounds_match_finite_differences() -> None:
    manual_seed(7)
    model = Routed(iterations=3).double()
    x = np.random.default_rng(8).standard_normal((2, 2, 6, 6))
    r = np.random.default_rng(9).standard_normal((2, 3, 5))

    def objective(x: Tensor) -> dict[str, Tensor]:
        out = model(x)
        lengths = ((out["v"] * out["v"]).sum(-1) + 1e-9).sqrt()
        return {"loss": (out["v"] * r).sum() + (lengths * lengths).sum() * 3.0}

    g = trace(objective, [InputSpec(x.shape, "float64", "x")], module=model)
    params = {p.name: p.data for p in g.params if p.trainable}
    wrt = ["x", *params]
    grads = Interpreter(grad(g, "loss", wrt)).run({"x": x})
    fwd = Interpreter(g)
    rng = np.random.default_rng(10)
    eps = 1e-6
    for name in wrt:
        base = x if name == "x" else params[name]
        d = rng.standard_normal(base.shape)

        def at(t: float, name: str = name, base: np.ndarray = base, d: np.ndarray = d) -> float:
            if name == "x":
                return float(fwd.run({"x": base + t * d})["loss"])
            return float(fwd.run({"x": x}, params={**params, name: base + t * d})["loss"])

        numeric = (at(eps) - at(-eps)) / (2 * eps)
        analytic = float((grads[f"grad:{name}"] * d).sum())
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_routing_gradient_differs_from_frozen_coupling() -> None:
    """With 3 rounds the coefficients depend on the weights; the gradient includes that path,
    so it is not the gradient of the last round with its coefficients held fixed."""
    manual_seed(11)
    layer = nn.CapsuleRouting(6, 3, 2, 4, iterations=3).double()
    u = squash_ref(np.random.default_rng(12).standard_normal((3, 6, 3)))

    def full(x: Tensor) -> dict[str, Tensor]:
        return {"loss": layer(x).sum()}

    g = trace(full, [InputSpec(u.shape, "float64", "u")], module=layer)
    w_name = g.params[0].name
    gw = Interpreter(grad(g, "loss", [w_name])).run({"u": u})[f"grad:{w_name}"]
    w = layer.weight.data
    _, c = routing_ref(u, w, 3)

    def frozen(wt: np.ndarray) -> float:  # the last round with the coefficients c held fixed
        return float(squash_ref(np.einsum("nij,nijd->njd", c,
                                          np.einsum("ijdk,nik->nijd", wt, u))).sum())

    def routed(wt: np.ndarray) -> float:
        return float(routing_ref(u, wt, 3)[0].sum())

    d, eps = np.random.default_rng(13).standard_normal(w.shape), 1e-6
    analytic = float((gw * d).sum())
    full_fd = (routed(w + eps * d) - routed(w - eps * d)) / (2 * eps)
    frozen_fd = (frozen(w + eps * d) - frozen(w - eps * d)) / (2 * eps)
    assert analytic == pytest.approx(full_fd, rel=1e-5)
    assert abs(analytic - frozen_fd) > 1e-3 * abs(analytic)


def test_margin_loss_matches_the_formula() -> None:
    rng = np.random.default_rng(13)
    lengths = rng.uniform(0, 1, (6, 10)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    t = np.eye(10)[y]
    per = (t * np.maximum(0, 0.9 - lengths) ** 2
           + 0.5 * (1 - t) * np.maximum(0, lengths - 0.1) ** 2).sum(1)
    specs = [InputSpec(("N", 10), "float32", "v"), InputSpec(("N",), "int64", "y")]
    for reduction, ref in (("mean", per.mean()), ("sum", per.sum()), ("none", per)):
        g = trace(lambda v, y, r=reduction: F.margin_loss(v, y, reduction=r), specs)
        got = run(g, {"v": lengths, "y": y})["output"]
        np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_onnxruntime_matches_numpy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lbdl_graph.backends.onnx import OrtRunner, save_onnx

    manual_seed(14)
    g = trace(Routed(iterations=3), [InputSpec(("N", 2, 6, 6), "float32", "x")],
              training=False)
    x = rand(4, 2, 6, 6, seed=15)
    ref = run(g, {"x": x})
    got = OrtRunner(save_onnx(g, tmp_path / "caps.onnx")).run({"x": x})
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-6)
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "caps.onnx")).graph.node]
    assert ops.count("Softmax") == 2


def test_capsnet_decoder_reads_the_given_or_the_longest_capsule() -> None:
    manual_seed(16)
    net = CapsNet(CapsNetConfig(routing_iterations=2))
    x = rand(3, 1, 8, 8, seed=17)
    specs = [InputSpec(("N", 1, 8, 8), "float32", "x")]
    pred = run(trace(net, specs, training=False), {"x": x})
    labels = (pred["lengths"].argmax(1) + 1) % 10
    g = trace(net, [*specs, InputSpec(("N",), "int64", "labels")], training=False)
    given = run(g, {"x": x, "labels": labels})
    np.testing.assert_allclose(given["lengths"], pred["lengths"], rtol=1e-6)
    assert np.abs(given["recon"] - pred["recon"]).max() > 1e-4
    same = run(g, {"x": x, "labels": pred["lengths"].argmax(1)})
    np.testing.assert_allclose(same["recon"], pred["recon"], rtol=1e-5, atol=1e-6)

    def loss(x: Tensor, y: Tensor) -> Tensor:
        return capsnet_loss(net(x, y), y, x, recon_weight=0.5)

    got = run(trace(loss, [*specs, InputSpec(("N",), "int64", "y")], module=net),
              {"x": x, "y": labels})["output"]
    t = np.eye(10)[labels]
    v = given["lengths"]
    margin = (t * np.maximum(0, 0.9 - v) ** 2 + 0.5 * (1 - t) * np.maximum(0, v - 0.1) ** 2)
    sse = ((given["recon"] - x.reshape(3, 64)) ** 2).sum(1)
    assert float(got) == pytest.approx(margin.sum(1).mean() + 0.5 * sse.mean(), rel=1e-5)


@pytest.mark.parametrize("make, cls", [
    (lambda: nn.CapsuleRouting(4, 2, 3, 2, iterations=0), ShapeError),
    (lambda: nn.PrimaryCapsules(2, 0, 4, 3), ShapeError),
])
def test_bad_hyper_parameters_are_typed_errors(make, cls) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(cls, match=r"iterations|num_types"):
        make()


def test_bad_inputs_are_typed_errors() -> None:
    layer = nn.CapsuleRouting(4, 2, 3, 2)
    with pytest.raises(ShapeError, match=r"CapsuleRouting: input must be \(N, 4, 2\)"):
        trace(layer, [InputSpec(("N", 5, 2), "float32", "u")])
    with pytest.raises(OpError, match="iterations must be an integer >= 1"):
        trace(lambda u: F.dynamic_routing(u, 0)[0], [InputSpec((2, 4, 3, 2), "float32", "u")])
    with pytest.raises(ShapeError, match="u_hat must be"):
        trace(lambda u: F.dynamic_routing(u)[0], [InputSpec((2, 4, 3), "float32", "u")])
    with pytest.raises(DTypeError, match="target must be int class indices"):
        trace(lambda v: F.margin_loss(v, v), [InputSpec((2, 3), "float32", "v")])
    with pytest.raises(LbdlError, match="float"):
        trace(lambda u: F.squash(u), [InputSpec((2, 3), "int64", "u")])
