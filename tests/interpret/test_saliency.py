"""Saliency, integrated gradients and activation maximisation as graph transforms: gradients
against finite differences and torch, IG completeness, ascent, errors and the PNG writer."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import InputError
from lbdl_graph.frontends import Tensor, manual_seed, nn, trace
from lbdl_graph.frontends import functional as F
from lbdl_graph.frontends.interpret import (
    activation_maximization,
    image_grid,
    input_gradient,
    integrated_gradients,
    write_png,
)
from lbdl_graph.frontends.zoo import LeNet, LeNetConfig
from lbdl_graph.graph import Graph


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.tanh(self.fc1(x)))


def _lenet() -> Graph:
    manual_seed(3)
    cfg = LeNetConfig(image_size=8, channels=(4, 8), kernel_size=3, conv_padding=1,
                      pools=(2, 2), hidden=(16,))
    return trace(LeNet(cfg), {"x": ("N", 1, 8, 8)}, training=False)


def _mlp() -> tuple[Mlp, Graph]:
    manual_seed(1)
    m = Mlp()
    return m, trace(m, {"x": ("N", 6)}, training=False)


def test_input_gradient_matches_finite_differences_on_a_convnet() -> None:
    g = _lenet()
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 8, 8)).astype(np.float32)
    t = np.array([1, 5, 9])
    sal = run(input_gradient(g), {"x": x, "target": t})["saliency"]
    x64 = x.astype(np.float64)
    eps = 1e-2
    for n, (i, j) in enumerate([(2, 3), (4, 4), (6, 1)]):
        xp, xm = x64.copy(), x64.copy()
        xp[n, 0, i, j] += eps
        xm[n, 0, i, j] -= eps
        fp = run(g, {"x": xp.astype(np.float32)})["output"][n, t[n]]
        fm = run(g, {"x": xm.astype(np.float32)})["output"][n, t[n]]
        assert abs((fp - fm) / (2 * eps) - sal[n, 0, i, j]) < 2e-3 * max(1.0, abs(sal).max())
    assert np.abs(sal).max() > 0


def test_input_gradient_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    m, g = _mlp()
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 3, 1])
    res = run(input_gradient(g), {"x": x, "target": t})
    sd = {k: torch.tensor(np.asarray(v)) for k, v in m.state_dict().items()}
    xt = torch.tensor(x, requires_grad=True)
    h = torch.tanh(xt @ sd["fc1.weight"].T + sd["fc1.bias"])
    out = h @ sd["fc2.weight"].T + sd["fc2.bias"]
    score = out[torch.arange(5), torch.tensor(t)]
    score.sum().backward()
    np.testing.assert_allclose(res["score"], score.detach().numpy(), atol=1e-5)
    assert xt.grad is not None
    np.testing.assert_allclose(res["saliency"], xt.grad.numpy(), atol=1e-5)


def test_integrated_gradients_completeness_improves_with_steps() -> None:
    g = _lenet()
    rng = np.random.default_rng(2)
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    feeds = {"x": x, "target": np.array([0, 3, 7, 2]), "baseline": np.zeros_like(x)}
    gaps = []
    for steps in (2, 64):
        r = run(integrated_gradients(g, steps=steps), feeds)
        np.testing.assert_allclose(r["score"], run(g, {"x": x})["output"][
            np.arange(4), feeds["target"]], atol=1e-5)
        gaps.append(np.abs(r["attribution"].sum((1, 2, 3)) - (r["score"] - r["baseline_score"])))
    spread = np.abs(r["score"] - r["baseline_score"])
    assert gaps[1].max() <= 0.02 * max(1.0, spread.max())
    assert gaps[1].mean() < gaps[0].mean()


def test_integrated_gradients_of_a_linear_model_is_exact() -> None:
    manual_seed(0)
    lin = nn.Linear(5, 3)
    g = trace(lin, {"x": ("N", 5)}, training=False)
    x = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32)
    b = np.ones_like(x)
    r = run(integrated_gradients(g, steps=1), {"x": x, "target": np.array([2, 0]), "baseline": b})
    w = np.asarray(lin.state_dict()["weight"])
    np.testing.assert_allclose(r["attribution"], w[[2, 0]] * (x - b), atol=1e-5)


def test_activation_maximization_raises_the_score_within_range() -> None:
    g = _lenet()
    x0 = np.full((3, 1, 8, 8), 0.3, np.float32)
    t = np.array([1, 4, 8])
    start = run(g, {"x": x0})["output"][np.arange(3), t]
    xs, score = activation_maximization(g, t, x0, steps=20, lr=0.1, l2=0.01)
    assert (score > start).all()
    assert xs.min() >= 0.0 and xs.max() <= 1.0


def test_a_hidden_feature_map_can_be_scored() -> None:
    g = _lenet()
    conv = next(n.outputs[0].name for n in g.nodes if n.op.name == "conv")
    x = np.random.default_rng(4).random((2, 1, 8, 8)).astype(np.float32)
    r = run(input_gradient(g, output=conv), {"x": x, "target": np.array([0, 3])})
    assert r["saliency"].shape == x.shape and np.abs(r["saliency"]).max() > 0


def test_bad_requests_raise_input_errors() -> None:
    g = _lenet()
    with pytest.raises(InputError, match="no input 'img'"):
        input_gradient(g, "img")
    with pytest.raises(InputError, match="no value 'nope'"):
        input_gradient(g, output="nope")
    with pytest.raises(InputError, match="steps must be >= 1"):
        integrated_gradients(g, steps=0)
    with pytest.raises(InputError, match="2 targets for 3"):
        activation_maximization(g, np.array([0, 1]), np.zeros((3, 1, 8, 8), np.float32))


def _read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = body
        pos += 12 + n
    w, h, _, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    ch = 3 if colour == 2 else 1
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + w * ch)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, ch)


def test_png_writer_round_trips(tmp_path: Path) -> None:
    img = np.linspace(0, 1, 12).reshape(3, 4)
    got = _read_png(write_png(tmp_path / "a.png", img, scale=2))
    assert got.shape == (6, 8, 1)
    np.testing.assert_array_equal(got[::2, ::2, 0], np.round(img * 255).astype(np.uint8))
    grid = image_grid([[img, img], [img]])
    rgb = _read_png(write_png(tmp_path / "b.png", grid))
    assert rgb.shape == (2 * 4 + 1, 2 * 5 + 1, 3)
    with pytest.raises(InputError, match="non-finite"):
        write_png(tmp_path / "c.png", np.full((2, 2), np.nan))
