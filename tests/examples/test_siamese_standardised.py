"""``examples/siamese_digits.py``'s ``Standardised`` encoder: its graphs standardise raw
pixels with the training images' per-pixel statistics (checked against NumPy), and a
training step updates the encoder's parameters but never those statistics."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import Tensor, manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import Siamese


@pytest.fixture(scope="module")
def siam(import_example: Callable[[str], ModuleType]) -> ModuleType:
    return import_example("siamese_digits")


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


def test_embed_and_distance_standardise_raw_pixels(siam: ModuleType) -> None:
    x_train = _images(50, 0)
    x_train[:, :, 0, 0] = 0.25  # a constant pixel: its scale is 1 / STD_FLOOR
    manual_seed(0)
    inner = Siamese(siam.CONFIG)
    model = siam.Standardised(inner, x_train)
    x1, x2 = _images(7, 1), _images(7, 2)
    mean, std = x_train.mean(0), x_train.std(0) + siam.STD_FLOOR
    spec = {"x": ("N", 1, 8, 8)}
    got = run(trace(lambda x: model.embed(x), spec, module=model, training=False), {"x": x1})
    want = run(trace(lambda x: inner.embed(x), spec, module=inner, training=False),
               {"x": (x1 - mean) / std})
    np.testing.assert_allclose(got["output"], want["output"], rtol=1e-5, atol=1e-6)
    pair = trace(model, {"x1": ("N", 1, 8, 8), "x2": ("N", 1, 8, 8)}, training=False)
    ref = trace(inner, {"x1": ("N", 1, 8, 8), "x2": ("N", 1, 8, 8)}, training=False)
    d = run(pair, {"x1": x1, "x2": x2})["output"]
    d_ref = run(ref, {"x1": (x1 - mean) / std, "x2": (x2 - mean) / std})["output"]
    np.testing.assert_allclose(d, d_ref, rtol=1e-5, atol=1e-6)


def test_training_keeps_the_pixel_statistics(siam: ModuleType) -> None:
    x_train = _images(40, 3)
    manual_seed(1)
    model = siam.Standardised(Siamese(siam.CONFIG), x_train)
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    pairs = siam.Pairs(model)
    y = (np.arange(32) % 2).astype(np.float32)

    def loss(out: tuple[Tensor, ...], target: Tensor) -> Tensor:
        return siam.F.contrastive_loss(out[0], out[1], target, margin=siam.MARGIN)

    fit(pairs, {"x1": _images(32, 4), "x2": _images(32, 5)}, y, loss=loss, batch_size=16,
        shuffle=False, progress=False)
    after = {k: np.array(v) for k, v in model.state_dict().items()}
    np.testing.assert_array_equal(after["mean"], x_train.mean(0))
    np.testing.assert_allclose(after["scale"], 1 / (x_train.std(0) + siam.STD_FLOOR),
                               rtol=1e-6)
    assert any(not np.array_equal(after[k], state[k]) for k in state
               if k not in ("mean", "scale"))
