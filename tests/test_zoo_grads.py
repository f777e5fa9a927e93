"""Gradients of every tiny zoo model (float64, training mode) against central differences."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.frontends import InputSpec, Tensor, manual_seed, trace
from lbdl_graph.frontends.zoo import ZOO
from lbdl_graph.passes.autodiff import grad

TINY = sorted(name for name, e in ZOO.items() if e.tiny)


def _graph_and_feeds(name: str):  # type: ignore[no-untyped-def]
    entry = ZOO[name]
    model = entry.model().double()
    specs = {k: InputSpec(s.shape, "float64" if np.dtype(s.dtype).kind == "f" else s.dtype, s.name)
             for k, s in entry.inputs.items()}
    arg_names = list(specs)
    rng = np.random.default_rng(7)

    def objective(**kw: Tensor) -> dict[str, Tensor]:
        out = model(*(kw[n] for n in arg_names))
        flat = list(out.values()) if isinstance(out, dict) else (
            list(out) if isinstance(out, tuple | list) else [out])
        total = None
        for t in flat:
            if isinstance(t, Tensor) and t.dtype.is_float:
                term = (t * t).mean()  # a smooth scalar of every output
                total = term if total is None else total + term
        return {"loss": total}

    graph = trace(objective, specs, name=name, training=True, module=model)
    feeds = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v)
             for k, v in entry.example_inputs(seed=3).items()}
    if "rng_key" in {v.name for v in graph.inputs}:
        feeds["rng_key"] = np.array([5, 1], np.int64)
    return graph, feeds, rng


@pytest.mark.parametrize("name", TINY)
def test_zoo_gradients_match_finite_differences(name: str) -> None:
    """Per parameter (up to 8 spread over the model), along a random direction. ReLU, max-pool
    ties and the like make the loss piecewise smooth: where central differences at two step
    sizes disagree, the direction crosses a kink; it is retried with steps four times smaller
    and skipped if they disagree too; most must be checked."""
    manual_seed(0)
    graph, feeds, rng = _graph_and_feeds(name)
    params = {p.name: p.data for p in graph.params if p.trainable}
    grads = Interpreter(grad(graph, "loss", list(params), allow_unused=True)).run(feeds)
    fwd = Interpreter(graph)

    def diff(k: str, d: np.ndarray, eps: float) -> float:
        plus = fwd.run(feeds, params={**params, k: params[k] + eps * d})["loss"]
        minus = fwd.run(feeds, params={**params, k: params[k] - eps * d})["loss"]
        return float(plus - minus) / (2 * eps)

    names = list(params)
    names = [names[i] for i in np.linspace(0, len(names) - 1, min(8, len(names))).astype(int)]
    checked, bad = 0, []
    for k in dict.fromkeys(names):
        v = params[k]
        d = rng.normal(size=v.shape)
        analytic = float((grads[f"grad:{k}"] * d).sum())
        fd = None
        for eps in (1e-5, 2.5e-6):  # a kink within the step: retry with smaller steps
            fd1, fd2 = diff(k, d, eps), diff(k, d, eps / 4)
            if abs(fd1 - fd2) <= 1e-5 * max(1e-6, abs(fd2)) + 1e-9:
                fd = fd2
                break
        if fd is None:
            continue  # kinks at every step: not a point where the derivative exists
        checked += 1
        if abs(analytic - fd) > 1e-4 * max(1e-6, abs(fd)) + 1e-8:
            bad.append((k, analytic, fd))
    assert not bad, f"{name}: gradients differ from finite differences: {bad}"
    assert checked >= max(1, len(set(names)) // 2), f"{name}: only {checked} checked"
