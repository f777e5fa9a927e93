"""Model merging as a graph (book section 8.4): learn task-arithmetic coefficients by gradient.

An MLP (64-64-10) is pre-trained on digits for a few steps (the base), then fine-tuned twice:
on the digits 0-4 only (task A) and on 5-9 only (task B). Each fine-tune forgets the other
half. ``passes.merge_graph.build_merge_graph`` builds ``θ + λ_A τ_A + λ_B τ_B`` as graph
nodes with the λs as trainable parameters; the MLP's forward and a cross-entropy loss are added
after the merge, ``grad`` differentiates through it, and gradient descent on a 200-image
validation split learns the λs. Held-out accuracy on all ten digits: the base, each fine-tune,
task arithmetic at λ = 0.5 and 1, TIES (density 0.2), and the learned λs. The merge graph
itself (parameters in, merged parameters out) is exported to ONNX and ONNX Runtime's merged
parameters are checked against NumPy's, and the merged MLP as well.

    python examples/merge_coefficients.py     # about 3 s
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, digits, parse_args, stage

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, save_onnx
from lbdl_graph.frontends import InputSpec, manual_seed, nn, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.merge_graph import build_merge_graph
from lbdl_graph.passes.optim import Adam

Params = dict[str, np.ndarray]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def accuracy(model: nn.Module, params: Params, x: np.ndarray, y: np.ndarray) -> float:
    model.load_state_dict(params)
    g = trace(model, {"x": InputSpec(("N", 64), "float32")}, training=False)
    return float((Interpreter(g, training=False).run({"x": x})["output"].argmax(1) == y).mean())


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> Params:
    fit(model, x, y, loss="cross_entropy", epochs=100, batch_size=32, max_steps=steps,
        optimizer=Adam(3e-3), seed=seed, progress=False)
    return {k: v.copy() for k, v in model.state_dict().items()}


def learn_lambdas(base: Params, fts: list[Params], x: np.ndarray, y: np.ndarray, steps: int
                  ) -> tuple[np.ndarray, float, float]:
    """Gradient descent on (λ_A, λ_B) through the merge graph + the MLP + cross-entropy."""
    g = build_merge_graph(base, fts, weights=[0.5, 0.5], learn_coefficients=True)
    b = GraphBuilder.from_graph(g)
    xin = b.input("x", "float32", ("N", 64))
    onehot = b.input("onehot", "float32", ("N", 10))
    m = g.values
    with b:
        h = ops.relu(ops.add(ops.matmul(xin, ops.transpose(m["0.weight"], perm=(1, 0))),
                             m["0.bias"]))
        logits = ops.add(ops.matmul(h, ops.transpose(m["2.weight"], perm=(1, 0))), m["2.bias"])
        nll = ops.neg(ops.reduce_sum(ops.mul(onehot, ops.log_softmax(logits, axis=-1)),
                                     axes=(1,), keepdims=False))
        loss = ops.reduce_mean(nll, axes=None, keepdims=False)
    run = Interpreter(grad(b.build({"loss": loss})))
    feeds = {"x": x, "onehot": np.eye(10, dtype=np.float32)[y]}
    lam, first, last = np.asarray([0.5, 0.5]), 0.0, 0.0
    for i in range(steps):
        res = run.run(feeds, params={f"merge/lambda_{t}": np.asarray(lam[t]) for t in range(2)})
        first = float(res["loss"]) if i == 0 else first
        last = float(res["loss"])
        lam = lam - 0.01 * np.asarray([res["grad:merge/lambda_0"], res["grad:merge/lambda_1"]])
    return lam, first, last


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 300, "fine-tuning steps per task")})
    steps = 3 if args.quick else args.steps
    x, y, xt, yt = digits(seed=args.seed)
    x, xt = x.reshape(len(x), 64), xt.reshape(len(xt), 64)
    xv, yv, x, y = x[:200], y[:200], x[200:], y[200:]
    manual_seed(args.seed)
    model = mlp()
    with stage(f"pre-training the base ({max(steps // 30, 2)} steps) and fine-tuning on 0-4 and "
               f"5-9 ({steps} steps each)"):
        base = train(model, x, y, max(steps // 30, 2), args.seed)
        fts = []
        for lo in (0, 5):
            model.load_state_dict(base)
            keep = (y >= lo) & (y < lo + 5)
            fts.append(train(model, x[keep], y[keep], steps, args.seed))
    results = {"base": base, "fine-tuned on 0-4": fts[0], "fine-tuned on 5-9": fts[1]}
    for lam in (0.5, 1.0):
        results[f"task arithmetic, λ = {lam:g}"] = Interpreter(
            build_merge_graph(base, fts, weights=lam)).run({})
    results["TIES, density 0.2, λ = 1"] = Interpreter(
        build_merge_graph(base, fts, "ties", density=0.2)).run({})
    with stage("learning λ by gradient descent through the merge graph (validation split)"):
        lam, first, last = learn_lambdas(base, fts, xv, yv, 3 if args.quick else 150)
    print(f"  validation loss {first:.3f} -> {last:.3f}; learned λ = ({lam[0]:.3f}, "
          f"{lam[1]:.3f})")
    learned = build_merge_graph(base, fts, weights=list(lam))
    results["task arithmetic, learned λ"] = Interpreter(learned).run({})
    for label, params in results.items():
        print(f"held-out accuracy on all 10 digits: {label:<30} "
              f"{accuracy(model, params, xt, yt):.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_onnx(learned, args.out / "merge_graph.onnx", training=False)
    on_ort = OrtRunner(path).run({})
    want = results["task arithmetic, learned λ"]
    diff = max(float(np.max(np.abs(on_ort[k] - want[k]))) for k in want)
    print(f"merge graph ({len(learned.nodes)} nodes) exported to {path}: onnxruntime vs numpy "
          f"merged parameters, max abs diff {diff:.3g}")
    if diff > 1e-6:
        raise SystemExit(1)
    model.load_state_dict(results["task arithmetic, learned λ"])
    g = trace(model, {"x": InputSpec(("N", 64), "float32")}, training=False)
    check_onnx(g, {"x": xt[:64]}, args.out, "merged_mlp")


if __name__ == "__main__":
    main()
