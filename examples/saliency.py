"""Saliency maps and feature visualisation (seed course chapter 7.5): what a digits classifier
looks at, as graph transforms built by symbolic autodiff.

A LeNet-style convnet (the zoo's ``LeNet``, 8x8 configuration) is trained on scikit-learn's
digits. Three transforms of ``frontends.interpret`` turn its inference graph into new graphs:
the input gradient of the true class's logit (saliency), integrated gradients from a black
baseline (32 midpoints in one batch through one inlined copy of the model), and one step of
activation maximisation (gradient ascent on the input with an L2 penalty, clipped to [0, 1]).

The attributions are measured by *deletion*: blacking out the 8 pixels (of 64) that a method
ranks highest should hurt the classifier far more than blacking out 8 random ink pixels (the
baseline, same run). Integrated gradients' completeness (attributions sum to f(x) - f(0)) is
checked, activation maximisation is scored by the softmax probability of the target class,
and PNG pictures are written: ``saliency.png`` (per class: digit, |gradient|, integrated
gradients in red/blue) and ``activation_maximization.png``. Both attribution graphs are
exported to ONNX and checked on ONNX Runtime against NumPy.

Measured (seed 0, 6 epochs, 3.6 s pinned to one core): held-out accuracy 0.958 (majority
class 0.078);
after deleting 8 pixels: random ink pixels 0.755, |input gradient| 0.390, integrated gradients
0.019; completeness gap 0.019 against a mean |f(x) - f(0)| of 5.84; activation maximisation
lifts the target-class probability from 0.100 to 0.992.

    python examples/saliency.py
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, digits, parse_args, run_graph, stage

from lbdl_graph.frontends import manual_seed, trace
from lbdl_graph.frontends.interpret import (
    activation_maximization,
    diverging,
    image_grid,
    input_gradient,
    integrated_gradients,
    write_png,
)
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import LeNet, LeNetConfig
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam, CosineLR

CONFIG = LeNetConfig(image_size=8, channels=(16, 32), kernel_size=3, conv_padding=1,
                     pools=(2, 2), hidden=(64,))
DELETE = 8  # pixels blacked out per image


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def delete_top(x: np.ndarray, rank: np.ndarray, k: int) -> np.ndarray:
    """``x`` with the ``k`` pixels of highest ``rank`` (per image) set to 0."""
    flat = x.reshape(len(x), -1).copy()
    top = np.argsort(-rank.reshape(len(x), -1), axis=1)[:, :k]
    np.put_along_axis(flat, top, 0.0, axis=1)
    return flat.reshape(x.shape)


def accuracy(graph: Graph, x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy of the classifier graph."""
    return float((run_graph(graph, {"x": x})["output"].argmax(1) == y).mean())


def main() -> None:
    args = parse_args(__doc__, extra={"epochs": (int, 6, "training epochs"),
                                      "steps_ig": (int, 32, "integrated-gradients steps")})
    epochs = 1 if args.quick else args.epochs
    xtr, ytr, xte, yte = digits(seed=args.seed)
    if args.quick:
        xtr, ytr, xte, yte = xtr[:256], ytr[:256], xte[:64], yte[:64]
    manual_seed(args.seed)
    model = LeNet(CONFIG)
    steps = epochs * -(-len(xtr) // 32)
    with stage(f"training LeNet on {len(xtr)} digits: {epochs} epoch(s), "
               f"{model.num_parameters():,} parameters"):
        fit(model, xtr, ytr, epochs=epochs, batch_size=32, optimizer=Adam(CosineLR(3e-3, steps)),
            backend=args.backend, seed=args.seed, progress=False)
    graph = trace(model, {"x": ("N", 1, 8, 8)}, training=False)
    acc = accuracy(graph, xte, yte)
    print(f"held-out accuracy: trained {acc:.3f}, majority class "
          f"{float((yte == np.bincount(ytr).argmax()).mean()):.3f}")

    with stage("building the attribution graphs (input gradient, integrated gradients)"):
        sal_g = input_gradient(graph, "x")
        ig_g = integrated_gradients(graph, "x", steps=args.steps_ig)
    print(f"graphs: classifier {len(graph.nodes)} nodes, saliency {len(sal_g.nodes)}, "
          f"integrated gradients {len(ig_g.nodes)}")
    base = np.zeros_like(xte)
    with stage(f"attributing {len(xte)} held-out digits"):
        sal = run_graph(sal_g, {"x": xte, "target": yte})["saliency"]
        ig = run_graph(ig_g, {"x": xte, "target": yte, "baseline": base})
    gap = np.abs(ig["attribution"].sum((1, 2, 3)) - (ig["score"] - ig["baseline_score"]))
    spread = float(np.abs(ig["score"] - ig["baseline_score"]).mean())
    print(f"integrated gradients completeness: mean |sum(attribution) - (f(x) - f(0))| "
          f"{gap.mean():.4f} (mean |f(x) - f(0)| {spread:.3f})")

    rng = np.random.default_rng(args.seed)
    ink_random = (xte > 0) * rng.random(xte.shape)  # random order among the ink pixels
    results = {"random ink pixels (baseline)": ink_random, "|input gradient|": np.abs(sal),
               "integrated gradients": ig["attribution"]}
    print(f"deleting the top {DELETE} of 64 pixels per image (set to 0): held-out accuracy")
    for name, rank in results.items():
        print(f"  {name:<30} {accuracy(graph, delete_top(xte, rank, DELETE), yte):.3f}")

    with stage("activation maximisation: 10 classes, 60 ascent steps from a grey image"):
        x0 = np.full((10, 1, 8, 8), 0.2, np.float32)
        targets = np.arange(10)
        xs, _ = activation_maximization(graph, targets, x0, steps=5 if args.quick else 60,
                                        lr=0.05, l2=0.05)
    p0 = softmax(run_graph(graph, {"x": x0})["output"])[targets, targets]
    p1 = softmax(run_graph(graph, {"x": xs})["output"])[targets, targets]
    print(f"activation maximisation: mean target-class probability {p0.mean():.3f} "
          f"(grey start) -> {p1.mean():.3f}")

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(10):
        i = int(np.flatnonzero(yte == c)[0]) if (yte == c).any() else 0
        g = np.abs(sal[i, 0])
        rows.append([xte[i, 0], g / (g.max() or 1.0), diverging(ig["attribution"][i, 0])])
    p1_path = write_png(args.out / "saliency.png", image_grid(rows), scale=8)
    p2_path = write_png(args.out / "activation_maximization.png",
                        image_grid([[xs[c, 0] for c in range(10)]]), scale=8)
    print(f"pictures: {p1_path}, {p2_path}")

    n = min(16, len(xte))
    check_onnx(sal_g, {"x": xte[:n], "target": yte[:n]}, args.out, "saliency_input_gradient")
    check_onnx(ig_g, {"x": xte[:n], "target": yte[:n], "baseline": base[:n]}, args.out,
               "saliency_integrated_gradients")


if __name__ == "__main__":
    main()
