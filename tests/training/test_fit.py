"""fit(): learning on real data, validation, early stopping, checkpoints and errors."""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from lbdl_graph.errors import InputError
from lbdl_graph.frontends import functional as F
from lbdl_graph.frontends import manual_seed, nn
from lbdl_graph.frontends.training import fit
from lbdl_graph.passes.optim import SGD, Adam


class SmallCNN(nn.Module):
    """A LeNet-style CNN for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)
        self.drop = nn.Dropout(0.2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(self.drop(F.relu(self.fc1(x.flatten(1)))))


def digits() -> tuple[np.ndarray, ...]:
    """scikit-learn's digits, shuffled, 1400 train / 397 held-out test."""
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy with an eval-mode trace run on the NumPy backend."""
    from lbdl_graph.backends.numpy import run
    from lbdl_graph.frontends import trace

    g = trace(model, [("N", *x.shape[1:])], training=False)
    logits = run(g, {g.inputs[0].name: x})["output"]
    return float((logits.argmax(1) == y).mean())


def test_cnn_reaches_97_percent_on_held_out_digits() -> None:
    xtr, ytr, xte, yte = digits()
    manual_seed(0)
    model = SmallCNN()
    hist = fit(model, xtr, ytr, metrics=["accuracy"], optimizer=Adam(2e-3), epochs=25,
               batch_size=64, validation_data=(xte, yte), progress=False)
    assert hist["loss"][-1] < hist["loss"][0] / 5
    assert accuracy(model, xte, yte) >= 0.97  # the model now holds the trained weights
    assert hist["val_accuracy"][-1] == pytest.approx(accuracy(model, xte, yte), abs=1e-6)


def test_mlp_learns_xor_with_fit() -> None:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 8, np.float32)
    y = (x[:, 0] != x[:, 1]).astype(np.int64)
    manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    hist = fit(model, x, y, metrics=["accuracy"], optimizer=Adam(0.05), epochs=60, batch_size=8,
               progress=False)
    assert hist["accuracy"][-1] == 1.0


def test_early_stopping_restores_best_weights() -> None:
    xtr, ytr, xte, yte = digits()
    manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    # a huge learning rate makes validation loss get worse after the first epochs
    hist = fit(model, xtr[:300], ytr[:300], optimizer=SGD(lr=3.0), epochs=30, batch_size=32,
               validation_data=(xte, yte), early_stopping=2, progress=False)
    assert hist.stopped_early and hist.best_epoch is not None
    assert hist.best_epoch < len(hist.epochs)
    best = min(hist["val_loss"])
    assert hist["val_loss"][hist.best_epoch - 1] == best
    # the model holds the best epoch's weights, not the last ones
    from lbdl_graph.backends.numpy import run
    from lbdl_graph.frontends import trace

    g = trace(model, [("N", 1, 8, 8)], training=False)
    logits = run(g, {g.inputs[0].name: xte})["output"].astype(np.float64)
    z = logits - logits.max(1, keepdims=True)
    val_loss = float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(yte)), yte]))
    assert val_loss == pytest.approx(best, rel=1e-5)


def test_validation_split_and_checkpoint_resume(tmp_path: Path) -> None:
    xtr, ytr, _, _ = digits()
    x, y = xtr[:256], ytr[:256]
    ck = tmp_path / "ck.safetensors"

    def model() -> nn.Module:
        manual_seed(3)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1),
                             nn.Linear(32, 10))

    full = model()
    h_full = fit(full, x, y, epochs=4, batch_size=32, validation_split=0.25, progress=False)
    part = model()
    fit(part, x, y, epochs=2, batch_size=32, validation_split=0.25, progress=False,
        checkpoint=ck)
    resumed = model()
    h_res = fit(resumed, x, y, epochs=4, batch_size=32, validation_split=0.25, progress=False,
                resume=ck)
    assert h_res["loss"] == h_full["loss"]  # bit-identical continuation
    for k, v in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v)


def test_progress_is_silent_when_not_a_tty() -> None:
    x = np.zeros((8, 2), np.float32)
    y = np.zeros(8, np.int64)
    err = io.StringIO()
    with redirect_stderr(err):
        fit(nn.Linear(2, 2), x, y, epochs=1, batch_size=4)
    assert err.getvalue() == ""


def test_bad_arguments() -> None:
    x = np.zeros((8, 2), np.float32)
    with pytest.raises(InputError, match="differ in length"):
        fit(nn.Linear(2, 2), x, np.zeros(7, np.int64), progress=False)
    with pytest.raises(InputError, match="unknown loss"):
        fit(nn.Linear(2, 2), x, np.zeros(8, np.int64), loss="hinge", progress=False)
    with pytest.raises(InputError, match="unknown backend"):
        fit(nn.Linear(2, 2), x, np.zeros(8, np.int64), backend="tpu", progress=False)
    with pytest.raises(InputError, match="epochs"):
        fit(nn.Linear(2, 2), x, np.zeros(8, np.int64), epochs=0, progress=False)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_nan_names_the_first_node_and_user_line(backend: str) -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(x).sqrt()  # negative pre-activations give NaN here

    manual_seed(0)
    x = -np.ones((8, 2), np.float32)
    from lbdl_graph.errors import NumericError

    with pytest.raises(NumericError) as info:
        fit(Bad(), x, np.zeros(8, np.int64), epochs=1, batch_size=8, progress=False,
            backend=backend)
    assert "sqrt" in (info.value.op or "") and "test_fit.py" in str(info.value)


def test_cross_entropy_layouts() -> None:
    """Classes on axis 1 for (N, C, H, W) segmentation logits, last for (N, T, C) sequences."""
    from lbdl_graph.backends.numpy import run
    from lbdl_graph.frontends import InputSpec, trace
    from lbdl_graph.frontends.training.trainer import LOSSES

    rng = np.random.default_rng(0)
    for shape, target_shape, axis in (((2, 3, 4, 5), (2, 4, 5), 1), ((2, 6, 3), (2, 6), -1)):
        logits = rng.normal(size=shape).astype(np.float32)
        target = rng.integers(0, shape[axis], target_shape)
        g = trace(lambda x, y: LOSSES["cross_entropy"](x, y),
                  {"x": InputSpec(shape), "y": InputSpec(target_shape, "int64")})
        got = float(run(g, {"x": logits, "y": target})["output"])
        z = np.moveaxis(logits, axis, -1).reshape(-1, shape[axis]).astype(np.float64)
        logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(
            1, keepdims=True)
        want = -logp[np.arange(len(z)), target.reshape(-1)].mean()
        assert got == pytest.approx(want, rel=1e-5)


def _tiny_data() -> tuple[np.ndarray, np.ndarray]:
    xtr, ytr, _, _ = digits()
    return xtr[:128], ytr[:128]


def _tiny_model(extra: bool = False) -> nn.Module:
    manual_seed(4)
    layers = [nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)]
    if extra:
        layers += [nn.ReLU(), nn.Linear(10, 10)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_resume_rejects_a_checkpoint_of_another_model_or_optimizer(tmp_path: Path,
                                                                    backend: str) -> None:
    from lbdl_graph.errors import CheckpointError

    x, y = _tiny_data()
    ck = tmp_path / "ck.safetensors"
    fit(_tiny_model(), x, y, optimizer=SGD(0.1), backend=backend, checkpoint=ck, progress=False)
    with pytest.raises(CheckpointError, match="missing"):
        fit(_tiny_model(extra=True), x, y, optimizer=SGD(0.1), backend=backend, resume=ck,
            progress=False)
    with pytest.raises(CheckpointError, match=r"opt\.m/"):
        fit(_tiny_model(), x, y, optimizer=Adam(), backend=backend, resume=ck, progress=False)


def test_max_steps_checkpoint_resumes_mid_epoch_bit_identically(tmp_path: Path) -> None:
    x, y = _tiny_data()  # 4 batches of 32 per epoch
    ck = tmp_path / "ck.safetensors"
    ref = _tiny_model()
    fit(ref, x, y, epochs=2, batch_size=32, progress=False)
    a = _tiny_model()
    fit(a, x, y, epochs=2, batch_size=32, max_steps=3, checkpoint=ck, progress=False)
    b = _tiny_model()
    hist = fit(b, x, y, epochs=2, batch_size=32, resume=ck, progress=False)
    assert [e["epoch"] for e in hist.epochs] == [1, 2]
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_early_stopping_direction() -> None:
    x, y = _tiny_data()

    def score(out, t):  # type: ignore[no-untyped-def]
        return (out.argmax(-1) == t).float().mean()

    with pytest.raises(InputError, match="mode="):
        fit(_tiny_model(), x, y, metrics=[("score", score)], validation_split=0.25,
            monitor="val_score", early_stopping=2, progress=False)
    hist = fit(_tiny_model(), x, y, epochs=6, metrics=[("score", score)], optimizer=Adam(1e-2),
               validation_split=0.25, monitor="val_score", mode="max", early_stopping=2,
               progress=False)
    best = max(hist["val_score"])
    assert hist["val_score"][hist.best_epoch - 1] == best


def test_input_named_y_is_rejected() -> None:
    x, y = _tiny_data()
    with pytest.raises(InputError, match="reserved"):
        fit(_tiny_model(), {"y": x}, y, progress=False)


def test_resume_keeps_early_stopping_state(tmp_path: Path) -> None:
    x, y = _tiny_data()
    _, _, xte, yte = digits()
    kw = {"batch_size": 32, "optimizer": SGD(lr=2.0), "validation_data": (xte, yte),
          "early_stopping": 2, "progress": False}
    full = _tiny_model()
    h_full = fit(full, x, y, epochs=12, **kw)  # type: ignore[arg-type]
    ck = tmp_path / "ck.safetensors"
    # stopped after 5 epochs: the best is epoch 4 and one epoch of patience is used up
    fit(_tiny_model(), x, y, epochs=12, max_steps=20, checkpoint=ck, **kw)
    resumed = _tiny_model()
    h_res = fit(resumed, x, y, epochs=12, resume=ck, **kw)  # type: ignore[arg-type]
    assert (h_res.best_epoch, h_res.stopped_early) == (h_full.best_epoch, h_full.stopped_early)
    assert h_res["val_loss"] == h_full["val_loss"]
    for k, v in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v)
