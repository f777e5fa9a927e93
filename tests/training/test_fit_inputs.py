"""``fit`` on a dict of inputs feeds each to the ``forward`` parameter of its name."""

from __future__ import annotations

import numpy as np

from lbdl_graph.frontends import manual_seed, nn
from lbdl_graph.frontends.tensor import Tensor
from lbdl_graph.frontends.training import fit
from lbdl_graph.passes.optim import SGD


class Affine(nn.Module):
    """``lin(a)``, times ``scale`` and plus ``shift`` when given (both optional)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, a: Tensor, scale: Tensor | None = None, shift: Tensor | None = None
                ) -> Tensor:
        h = self.lin(a)
        if scale is not None:
            h = h * scale
        return h if shift is None else h + shift


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(8, 3)).astype(np.float32),
            rng.normal(size=(8, 2)).astype(np.float32) + 5.0,
            np.zeros((8, 2), np.float32))


def test_inputs_go_to_the_parameters_of_their_names() -> None:
    a, shift, y = _data()
    manual_seed(0)
    m = Affine()
    w, b = m.lin.weight.data.copy(), m.lin.bias.data.copy()
    # "shift" skips the optional "scale" before it: fed by position it would scale
    h = fit(m, {"a": a, "shift": shift}, y, loss="mse", optimizer=SGD(0.0), batch_size=8,
            validation_data=({"a": a, "shift": shift}, y), progress=False)
    want = float(np.mean((a @ w.T + b + shift - y) ** 2))
    np.testing.assert_allclose(h["val_loss"][0], want, rtol=1e-5)


def test_unknown_names_keep_the_dict_order() -> None:
    a, scale, y = _data()
    manual_seed(0)
    m = Affine()
    w, b = m.lin.weight.data.copy(), m.lin.bias.data.copy()
    h = fit(m, {"first": a, "second": scale}, y, loss="mse", optimizer=SGD(0.0),
            batch_size=8, validation_data=({"first": a, "second": scale}, y), progress=False)
    want = float(np.mean(((a @ w.T + b) * scale - y) ** 2))
    np.testing.assert_allclose(h["val_loss"][0], want, rtol=1e-5)
