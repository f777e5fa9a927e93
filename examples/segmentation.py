"""Semantic segmentation (book section 6.4): a U-Net labels every pixel of synthetic scenes.

Each 16x16 RGB image shows one to three shapes (square, disk, triangle) of random colours and
sizes on a random background, with pixel noise; the target gives every pixel its class
(0 background, 1 square, 2 disk, 3 triangle), later shapes covering earlier ones. Colour says
nothing about the class: the network has to look at the shape. The zoo's 3-level U-Net
(8-16-32 channels, BatchNorm, skip concatenations) is trained with per-pixel cross-entropy on
freshly drawn scenes, then scored on held-out scenes by pixel accuracy and mean IoU over the
four classes, against predicting background everywhere and against the untrained network.
The trained model is exported to ONNX and ONNX Runtime is checked against NumPy.

    python examples/segmentation.py               # 1000 steps of 32 scenes (about 25 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, parse_args, run_graph, stage

from lbdl_graph.frontends import F, manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import UNet, UNetConfig
from lbdl_graph.passes.optim import Adam, CosineLR

SIZE = 16
CLASSES = ("background", "square", "disk", "triangle")
BATCH = 32


def shape_mask(kind: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean (SIZE, SIZE) mask of a square, disk or upward triangle of radius ``r``."""
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    if kind == 1:
        return (np.abs(xx - cx) <= 0.85 * r) & (np.abs(yy - cy) <= 0.85 * r)
    if kind == 2:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    return (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)


def scenes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 3, SIZE, SIZE) float32 and their label maps (n, SIZE, SIZE) int64."""
    img = np.empty((n, 3, SIZE, SIZE), np.float32)
    lab = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        img[i] = rng.uniform(0.0, 0.5, (3, 1, 1))
        for _ in range(rng.integers(1, 4)):
            kind, r = int(rng.integers(1, 4)), rng.uniform(SIZE / 8, SIZE / 4)
            cx, cy = rng.uniform(r, SIZE - r, 2)
            m = shape_mask(kind, cx, cy, r)
            img[i][:, m] = rng.uniform(0.3, 1.0, (3, 1))
            lab[i][m] = kind
    img += rng.normal(0.0, 0.05, img.shape).astype(np.float32)
    return img, lab


def scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float, list[float]]:
    """Pixel accuracy, mean IoU over the classes and the per-class IoU."""
    ious = []
    for c in range(len(CLASSES)):
        union = np.sum((pred == c) | (target == c))
        ious.append(float(np.sum((pred == c) & (target == c)) / union) if union else 1.0)
    return float(np.mean(pred == target)), float(np.mean(ious)), ious


def predict(model: UNet, x: np.ndarray) -> np.ndarray:
    """Per-pixel argmax of the eval-mode graph on NumPy."""
    graph = trace(model, {"x": ("N", 3, SIZE, SIZE)}, training=False)
    return run_graph(graph, {"x": x}, batch=128)["output"].argmax(1)


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 1000, "training steps")})
    steps = 4 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    xte, yte = scenes(rng, 64 if args.quick else 400)
    xtr, ytr = scenes(rng, steps * BATCH)
    print(f"data: {len(xtr)} training scenes (each seen once), {len(xte)} held-out scenes of "
          f"{SIZE}x{SIZE}; {np.mean(yte == 0):.1%} of the test pixels are background")

    manual_seed(args.seed)
    model = UNet(UNetConfig(in_channels=3, num_classes=len(CLASSES)))
    untrained = predict(model, xte)
    with stage(f"training on {args.backend}: {steps} steps of {BATCH}, "
               f"{model.num_parameters():,} parameters"):
        hist = fit(model, xtr, ytr, loss=lambda out, y: F.cross_entropy(out, y), epochs=1,
                   batch_size=BATCH, optimizer=Adam(CosineLR(3e-3, steps)),
                   backend=args.backend, seed=args.seed, progress=False)
    print(f"training cross-entropy (mean over the run): {hist['loss'][-1]:.4f}")

    rows = {"all background": np.zeros_like(yte), "untrained U-Net": untrained,
            "trained U-Net": predict(model, xte)}
    for name, pred in rows.items():
        acc, miou, ious = scores(pred, yte)
        per_class = ", ".join(f"{c} {v:.2f}" for c, v in zip(CLASSES, ious, strict=True))
        print(f"{name:<16} pixel accuracy {acc:.3f}  mIoU {miou:.3f}  ({per_class})")

    graph = trace(model, {"x": ("N", 3, SIZE, SIZE)}, training=False)
    check_onnx(graph, {"x": xte[:64]}, args.out, "segmentation")


if __name__ == "__main__":
    main()
