"""Image classification (book section 6.2): a LeNet-style convnet on scikit-learn's 8x8 digits,
trained once per backend.

The same model (two 3x3 conv / 2x2 max-pool / ReLU stages, then a 512-64-10 MLP; the zoo's
``LeNet`` with an 8x8 configuration) is initialised from the same seed and trained with the
same compiled training step (Adam, cosine decay) on the NumPy reference interpreter and on
ONNX Runtime. The script prints both loss curves, their largest difference, the held-out
accuracy of both trained models against the untrained model and the majority class, then
exports the ONNX Runtime-trained classifier and checks ONNX Runtime against NumPy.

    python examples/classify_digits.py            # 8 epochs per backend (about 10 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, digits, parse_args, run_graph, stage

from lbdl_graph.frontends import manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import LeNet, LeNetConfig
from lbdl_graph.passes.optim import Adam, CosineLR

CONFIG = LeNetConfig(image_size=8, channels=(16, 32), kernel_size=3, conv_padding=1,
                     pools=(2, 2), hidden=(64,))
BATCH = 32
LR = 3e-3


def predict(model: LeNet, x: np.ndarray) -> np.ndarray:
    """Predicted classes of an eval-mode trace of ``model`` run on NumPy."""
    graph = trace(model, {"x": ("N", 1, 8, 8)}, training=False)
    return run_graph(graph, {"x": x})["output"].argmax(1)


def accuracy(model: LeNet, x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy."""
    return float((predict(model, x) == y).mean())


def confusions(pred: np.ndarray, y: np.ndarray, top: int = 3) -> str:
    """The most frequent (true -> predicted) mistakes."""
    counts = np.zeros((10, 10), np.int64)
    np.add.at(counts, (y, pred), 1)
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None)[:top]
    pairs = [divmod(int(i), 10) for i in order if counts.flat[i]]
    return ", ".join(f"{t}->{p} ({counts[t, p]}x)" for t, p in pairs) or "none"


def main() -> None:
    args = parse_args(__doc__, extra={"epochs": (int, 8, "epochs per backend")})
    epochs = 1 if args.quick else args.epochs
    xtr, ytr, xte, yte = digits(seed=args.seed)
    if args.quick:
        xtr, ytr = xtr[:256], ytr[:256]
    steps = epochs * -(-len(xtr) // BATCH)
    print(f"data: scikit-learn digits, {len(xtr)} train / {len(xte)} held-out test images")
    majority = float((yte == np.bincount(ytr).argmax()).mean())
    manual_seed(args.seed)
    untrained = accuracy(LeNet(CONFIG), xte, yte)

    models, curves = {}, {}
    for backend in ("numpy", "onnxruntime"):
        manual_seed(args.seed)  # the same initial weights for both backends
        model = LeNet(CONFIG)
        with stage(f"training on {backend}: {epochs} epoch(s) x {steps // epochs} steps of "
                   f"{BATCH}, Adam {LR:g} with cosine decay ({model.num_parameters():,} "
                   "parameters)"):
            hist = fit(model, xtr, ytr, metrics=["accuracy"], epochs=epochs, batch_size=BATCH,
                       optimizer=Adam(CosineLR(LR, steps)), backend=backend, seed=args.seed,
                       progress=False)
        models[backend], curves[backend] = model, np.array(hist["loss"])
        for e in hist.epochs:
            print(f"  epoch {int(e['epoch'])}: loss {e['loss']:.4f}, train accuracy "
                  f"{e['accuracy']:.3f}")

    gap = float(np.max(np.abs(curves["numpy"] - curves["onnxruntime"])))
    print(f"loss curves numpy vs onnxruntime: max abs difference per epoch {gap:.2e}")
    print(f"held-out accuracy: untrained {untrained:.3f}, majority class {majority:.3f}")
    for backend, model in models.items():
        pred = predict(model, xte)
        print(f"held-out accuracy: trained on {backend} {np.mean(pred == yte):.3f}; most "
              f"frequent mistakes (true->predicted): {confusions(pred, yte)}")

    graph = trace(models["onnxruntime"], {"x": ("N", 1, 8, 8)}, training=False)
    check_onnx(graph, {"x": xte}, args.out, "classify_digits")


if __name__ == "__main__":
    main()
