"""Training-mode batch norm traces one ``batch_norm_train`` node: output, running statistics and
gradients equal torch's on both backends, and ONNX Runtime's in-place statistics outputs do not
leak between layers of the same width or into the parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lbdl_graph.frontends import InputSpec, Module, manual_seed, nn, trace
from lbdl_graph.frontends.tensor import Tensor
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.passes.optim import SGD
from lbdl_graph.passes.train_step import make_train_step


class TwoBN(Module):
    """conv -> bn -> relu -> conv -> bn (both of 4 channels), summed against a target."""

    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(4, affine=affine)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(4, affine=affine)

    def forward(self, x: Tensor, t: Tensor) -> dict[str, Tensor]:
        y = self.b2(self.c2(self.b1(self.c1(x)).relu()))
        return {"loss": (y * t).sum()}


def _step(affine: bool) -> Any:
    manual_seed(0)
    model = TwoBN(affine)
    g = trace(model, [InputSpec(("N", 3, 6, 5), name="x"), InputSpec(("N", 4, 6, 5), name="t")],
              training=True, module=model)
    assert [n.op.name for n in g.nodes].count("batch_norm_train") == 2
    return model, make_train_step(g, SGD(lr=0.1))


def _torch_step(model: TwoBN, x: np.ndarray, t: np.ndarray, affine: bool) -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    tm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False),
                             torch.nn.BatchNorm2d(4, affine=affine), torch.nn.ReLU(),
                             torch.nn.Conv2d(4, 4, 3, padding=1, bias=False),
                             torch.nn.BatchNorm2d(4, affine=affine)).double()
    with torch.no_grad():
        tm[0].weight.copy_(torch.tensor(model.c1.weight.data))
        tm[3].weight.copy_(torch.tensor(model.c2.weight.data))
    y = tm(torch.tensor(x, dtype=torch.float64))
    loss = (y * torch.tensor(t, dtype=torch.float64)).sum()
    loss.backward()
    out = {"loss": float(loss.detach()), "c1.weight": tm[0].weight.grad.numpy(),
           "c2.weight": tm[3].weight.grad.numpy(),
           "b1.running_mean": tm[1].running_mean.numpy(),
           "b1.running_var": tm[1].running_var.numpy(),
           "b2.running_mean": tm[4].running_mean.numpy(),
           "b2.running_var": tm[4].running_var.numpy()}
    if affine:
        out.update({"b1.weight": tm[1].weight.grad.numpy(), "b1.bias": tm[1].bias.grad.numpy(),
                    "b2.weight": tm[4].weight.grad.numpy(), "b2.bias": tm[4].bias.grad.numpy()})
    return out


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("affine", [True, False])
def test_step_matches_torch(backend: str, affine: bool) -> None:
    model, step = _step(affine)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 3, 6, 5)) * 3 + 1).astype(np.float32)
    t = rng.standard_normal((5, 4, 6, 5)).astype(np.float32)
    init = {k: np.array(v, copy=True) for k, v in step.initial_state.items()}
    runner = make_step_runner(step, backend)
    out = runner.step({"x": x, "t": t})
    state = runner.state()
    ref = _torch_step(model, x.astype(np.float64), t.astype(np.float64), affine)
    np.testing.assert_allclose(out["loss"], ref["loss"], rtol=1e-5, atol=1e-4)
    for k, want in ref.items():
        if k == "loss":
            continue
        # running statistics as they are; parameters after SGD: p - 0.1 * grad
        got = state[k] if "running" in k else (init[k] - state[k]) / 0.1
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{backend}: {k}")
    # a second step from the new state: the statistics outputs did not overwrite anything
    again = runner.step({"x": x, "t": t})
    assert np.isfinite(again["loss"])


def test_backends_agree_over_steps() -> None:
    _, step = _step(True)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((4, 3, 6, 5)).astype(np.float32),
             "t": rng.standard_normal((4, 4, 6, 5)).astype(np.float32)}
    a, b = make_step_runner(step, "numpy"), make_step_runner(step, "onnxruntime")
    for _ in range(3):
        np.testing.assert_allclose(b.step(feeds)["loss"], a.step(feeds)["loss"], rtol=1e-5,
                                   atol=1e-5)
    sa, sb = a.state(), b.state()
    for k in step.info.state:
        np.testing.assert_allclose(sb[k], sa[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_convert_precision_keeps_it_in_float32() -> None:
    from lbdl_graph.passes.precision import convert_precision

    manual_seed(0)
    model = TwoBN()
    g = trace(model, [InputSpec((2, 3, 6, 5), name="x"), InputSpec((2, 4, 6, 5), name="t")],
              training=True, module=model)
    half = convert_precision(g, "float16").graph
    bns = [n for n in half.nodes if n.op.name == "batch_norm_train"]
    assert len(bns) == 2
    assert all(v.type.dtype.name == "float32" for n in bns for v in (*n.inputs, *n.outputs)
               if v is not None)
