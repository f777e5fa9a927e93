"""Saliency maps, integrated gradients and activation maximisation as graph transforms.

Every function takes an inference graph (any model: a traced Module, an imported ONNX file)
and returns a new graph whose outputs are attributions, built by symbolic reverse-mode autodiff
(:func:`lbdl_graph.passes.autodiff.grad`) of a *score*: the value ``output`` read at the class
or channel given by a new int64 input ``target`` (N,) (averaged over trailing axes, so a conv
feature map (N, C, H, W) scores a channel). The batch's scores are summed before
differentiating, so each sample's input gradient is its own as long as samples do not interact
(eval mode).

* :func:`input_gradient`: d score / d input (Simonyan et al.'s saliency map);
* :func:`integrated_gradients`: (x - x') times the mean gradient at ``steps`` midpoints of the
  straight path from the baseline x' to x (Sundararajan et al.); the path points form one
  batch of N*steps rows through a single inlined copy of the model;
* :func:`activation_step` / :func:`activation_maximization`: gradient ascent on the input to
  maximise a score with an L2 penalty, clipped to a range.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import InputError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.passes.autodiff import grad

from ..tensor import Tensor

__all__ = ["activation_maximization", "activation_step", "inline_graph", "input_gradient",
           "integrated_gradients", "score_of"]

TARGET = "target"


def inline_graph(graph: Graph, feeds: Mapping[str, Value]) -> dict[str, Value]:
    """Emit ``graph``'s nodes into the active builder with its inputs replaced by ``feeds``
    (by input name); types are inferred again, so a feed may have another batch size. The
    builder must hold ``graph``'s parameters. Returns every value of the copy by its name in
    ``graph``."""
    from lbdl_graph.builder import current_builder

    b = current_builder()
    missing = [v.name for v in graph.inputs if v.name not in feeds]
    if missing:
        raise InputError(f"inline_graph: graph '{graph.name}' needs inputs {missing}")
    env: dict[Value, Value] = {v: feeds[v.name] for v in graph.inputs}
    for n in graph.nodes:
        ins = [env.get(v, v) if v is not None else None for v in n.inputs]
        outs = b.add_node(n.op, ins, n.attrs, name=n.name, source=n.source, scope=n.scope,
                          origin=n.origin or "interpret:inline")
        env.update(zip(n.outputs, outs, strict=True))
    named = {p.name: p.value for p in graph.params}
    named.update((v.name, env[v]) for v in graph.inputs)
    named.update((o.name, env[o]) for n in graph.nodes for o in n.outputs)
    return named


def score_of(out: Tensor, target: Tensor) -> Tensor:
    """Per-sample score (N,): ``out[n, target[n]]``, averaged over any axes after the second."""
    if out.ndim < 2 or not out.dtype.is_float:
        raise InputError(f"saliency: the scored output must be float (N, C, ...), got {out.type}")
    red = out.mean(tuple(range(2, out.ndim))) if out.ndim > 2 else out
    classes = Tensor(_builder().constant(np.arange(red.shape[1], dtype=np.int64)))
    onehot = (target.unsqueeze(-1) == classes).to(red.dtype)
    return (red * onehot).sum(1)


def _builder() -> GraphBuilder:
    from lbdl_graph.builder import current_builder

    return current_builder()


def _check(graph: Graph, input: str, output: str | None) -> tuple[Value, str]:
    names = [v.name for v in graph.inputs]
    if input not in names:
        raise InputError(f"saliency: graph '{graph.name}' has no input {input!r}; inputs: {names}")
    x = graph.inputs[names.index(input)]
    if not x.dtype.is_float:
        raise InputError(f"saliency: input {input!r} of graph '{graph.name}' is {x.type}; "
                         "only float inputs have gradients")
    if TARGET in names:
        raise InputError(f"saliency: graph '{graph.name}' already has an input {TARGET!r}")
    if output is None:
        if len(graph.outputs) != 1:
            raise InputError(f"saliency: graph '{graph.name}' has outputs "
                             f"{graph.output_names()}; name the scored one with output=")
        output = graph.outputs[0].name
    elif output not in {v.name for v in graph.iter_values()}:
        raise InputError(f"saliency: graph '{graph.name}' has no value {output!r}")
    return x, output


def _start(graph: Graph, name: str) -> tuple[GraphBuilder, dict[str, Value], Value]:
    """A builder with fresh copies of ``graph``'s inputs, its parameters and a target input."""
    b = GraphBuilder(name)
    b.metadata = {k: v for k, v in graph.metadata.items() if k != "grads"}
    ins = {v.name: b.input(v.name, v.dtype, v.shape) for v in graph.inputs}
    batch = next(iter(ins.values())).shape[0] if ins and next(iter(ins.values())).shape else "N"
    target = b.input(TARGET, "int64", (batch,))
    for p in graph.params:
        if b.unique_name(p.name) != p.name:
            raise InputError(f"saliency: parameter {p.name!r} of graph '{graph.name}' clashes "
                             "with an input name")
    b.params = list(graph.params)
    return b, ins, target


def _finish(g: Graph, outputs: Mapping[str, Value]) -> Graph:
    b = GraphBuilder.from_graph(g)
    return b.build(dict(outputs), prune=True)


def input_gradient(graph: Graph, input: str = "x", output: str | None = None) -> Graph:
    """Graph (``graph``'s inputs, ``target``) -> ``score`` (N,), ``saliency`` (d score / d
    ``input``, the input's shape)."""
    _, out_name = _check(graph, input, output)
    b, ins, target = _start(graph, f"{graph.name}_saliency")
    with b, b.scope("saliency"), b.provenance("saliency", "interpret:input_gradient"):
        vals = inline_graph(graph, ins)
        s = score_of(Tensor(vals[out_name]), Tensor(target))
        total = s.sum()
    g0 = b.build({"score": s.value, "total": total.value})
    g1 = grad(g0, "total", [input])
    return _finish(g1, {"score": g1.values["score"],
                        "saliency": g1.values[g1.metadata["grads"][input]]})


def integrated_gradients(graph: Graph, input: str = "x", output: str | None = None,
                         steps: int = 32) -> Graph:
    """Graph (``graph``'s inputs, ``baseline`` like ``input``, ``target``) -> ``attribution``
    (like ``input``), ``score`` f(x) and ``baseline_score`` f(baseline), both (N,).

    The midpoint rule over ``steps`` points makes ``attribution.sum()`` approach
    ``score - baseline_score`` (completeness) as ``steps`` grows."""
    if int(steps) < 1:
        raise InputError(f"integrated_gradients: steps must be >= 1, got {steps}")
    x, out_name = _check(graph, input, output)
    b, ins, target = _start(graph, f"{graph.name}_integrated_gradients")
    base = b.input("baseline", x.dtype, x.shape)
    s_all = int(steps) + 2  # the midpoints, then the two ends (alpha 0 and 1) for the scores
    alphas = np.concatenate([(np.arange(steps) + 0.5) / steps, [0.0, 1.0]])
    with b, b.scope("integrated_gradients"), b.provenance("integrated_gradients",
                                                          "interpret:integrated_gradients"):
        xt, bt = Tensor(ins[input]), Tensor(base)
        diff = xt - bt
        a = Tensor(b.constant(alphas.reshape((s_all,) + (1,) * x.ndim), x.dtype))
        pts = (bt.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(-1, *x.shape[1:])
        feeds = {input: pts.value}
        for name, v in ins.items():
            if name != input:
                t = Tensor(v).unsqueeze(0)
                feeds[name] = t.expand(s_all, *t.shape[1:]).reshape(-1, *v.shape[1:]).value
        tt = Tensor(target).unsqueeze(0)
        vals = inline_graph(graph, feeds)
        s = score_of(Tensor(vals[out_name]), tt.expand(s_all, tt.shape[1]).reshape(-1))
        total = s.sum()
    g0 = b.build({"total": total.value, "diff": diff.value, "s": s.value, "pts": pts.value})
    g1 = grad(g0, "total", [pts.value.name])
    gb = GraphBuilder.from_graph(g1)
    with gb, gb.scope("integrated_gradients"), gb.provenance(
            "integrated_gradients", "interpret:integrated_gradients"):
        gp = Tensor(g1.values[g1.metadata["grads"][pts.value.name]])
        gp = gp.reshape(s_all, -1, *x.shape[1:])
        attribution = gp[:steps].mean(0) * Tensor(g1.values["diff"])
        scores = Tensor(g1.values["s"]).reshape(s_all, -1)
        outs = {"attribution": attribution.value, "score": scores[steps + 1].value,
                "baseline_score": scores[steps].value}
    return gb.build(outs, prune=True)


def activation_step(graph: Graph, input: str = "x", output: str | None = None,
                    lr: float = 0.1, l2: float = 0.01, lo: float = 0.0, hi: float = 1.0
                    ) -> Graph:
    """One step of activation maximisation as a graph: (``graph``'s inputs, ``target``) ->
    ``x_next`` = clip(x + lr * d/dx [score - l2/2 |x|^2], lo, hi) and ``score`` (N,)."""
    if not lr > 0 or l2 < 0 or not lo < hi:
        raise InputError(f"activation_step: need lr > 0, l2 >= 0 and lo < hi; got lr={lr}, "
                         f"l2={l2}, lo={lo}, hi={hi}")
    _, out_name = _check(graph, input, output)
    b, ins, target = _start(graph, f"{graph.name}_activation_step")
    with b, b.scope("activation"), b.provenance("activation", "interpret:activation_step"):
        vals = inline_graph(graph, ins)
        s = score_of(Tensor(vals[out_name]), Tensor(target))
        xt = Tensor(ins[input])
        objective = s.sum() - (xt * xt).sum() * (l2 / 2)
    g0 = b.build({"score": s.value, "objective": objective.value})
    g1 = grad(g0, "objective", [input])
    gb = GraphBuilder.from_graph(g1)
    with gb, gb.scope("activation"), gb.provenance("activation", "interpret:activation_step"):
        g = Tensor(g1.values[g1.metadata["grads"][input]])
        x_next = (Tensor(ins[input]) + g * lr).clamp(lo, hi)
    return gb.build({"x_next": x_next.value, "score": g1.values["score"]}, prune=True)


def activation_maximization(graph: Graph, targets: np.ndarray, x0: np.ndarray, *,
                            steps: int = 100, input: str = "x", output: str | None = None,
                            lr: float = 0.1, l2: float = 0.01, lo: float = 0.0, hi: float = 1.0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`activation_step` ``steps`` times on NumPy from ``x0``, one image per entry of
    ``targets``; returns the final inputs and their scores."""
    from lbdl_graph.backends.numpy import run

    if len(targets) != len(x0):
        raise InputError(f"activation_maximization: {len(targets)} targets for {len(x0)} "
                         "starting inputs")
    step = activation_step(graph, input, output, lr, l2, lo, hi)
    x = np.asarray(x0, np.float32)
    feeds = {TARGET: np.asarray(targets, np.int64)}
    score = np.zeros(len(x), np.float32)
    for _ in range(int(steps)):
        res = run(step, {**feeds, input: x}, training=False)
        x, score = res["x_next"], res["score"]
    return x, score
