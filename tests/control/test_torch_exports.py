"""A TorchScript loop and if, exported by torch.onnx (legacy exporter, opset 17), import as
loop and if nodes and match torch."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends.onnx import import_onnx

torch = pytest.importorskip("torch")


class _LoopIf(torch.nn.Module):  # type: ignore[misc]
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x[0])
        for i in range(x.shape[0]):
            h = torch.tanh(h + x[i])
        if h.sum() > 0:  # noqa: SIM108 (torch.jit.script turns this if into ONNX If)
            h = h * 2
        else:
            h = h - 1
        return h


def test_scripted_loop_and_if_import_and_match_torch() -> None:
    model = torch.jit.script(_LoopIf())
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(4, 3),), f, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])
    g = import_onnx(f.getvalue())
    assert g.op_counts().get("loop") == 1 and g.op_counts().get("if") == 1
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(size=(4, 3)).astype(np.float32)
        want = _LoopIf()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(run(g, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)
