"""A whole compiled training step (conv, batch norm, max pool, dropout, cross entropy, SGD with
momentum) exported to ONNX and run on stock ONNX Runtime CPU, state kept in ORT memory."""

from __future__ import annotations

import numpy as np

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtStatefulRunner, to_onnx
from lbdl_graph.frontends import InputSpec, nn, trace
from lbdl_graph.frontends import functional as F
from lbdl_graph.passes.optim import SGD
from lbdl_graph.passes.train_step import make_train_step
from tests.onnx.test_lowering import check_model


class TinyLeNet(nn.Module):
    """conv -> batch norm -> relu -> max pool -> dropout -> linear, with a cross-entropy loss."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: object, y: object) -> dict[str, object]:
        h = self.pool(F.relu(self.bn(self.conv(x))))
        return {"loss": F.cross_entropy(self.fc(self.drop(self.flat(h))), y)}


def test_train_step_runs_on_ort_cpu_and_matches_numpy() -> None:
    model = TinyLeNet()
    model.train()
    g = trace(model, {"x": InputSpec(("N", 1, 8, 8), "float32"), "y": InputSpec(("N",), "int64")})
    step = make_train_step(g, SGD(0.1, momentum=0.9))
    check_model(to_onnx(step.graph))
    runner = OrtStatefulRunner(step.graph, {s: f"{s}:next" for s in step.info.state},
                               init=dict(step.initial_state), providers="cpu")
    reference = Interpreter(step.graph)
    state = {k: np.asarray(v) for k, v in step.initial_state.items()}
    rng = np.random.default_rng(0)
    for _ in range(4):
        batch = {"x": rng.standard_normal((6, 1, 8, 8)).astype(np.float32),
                 "y": rng.integers(0, 10, 6)}
        want = reference.run({**batch, **state})
        got = runner.step(batch)
        assert set(got) == {"loss", *step.info.metrics}
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
        state = {s: want[f"{s}:next"] for s in step.info.state}
        for name, value in runner.state().items():
            np.testing.assert_allclose(value, state[name], rtol=1e-4, atol=1e-5, err_msg=name)
