"""Object detection (book section 6.3): a single-shot detector finds and names synthetic shapes.

Each 32x32 RGB image holds one to three non-overlapping shapes (square, disk, triangle; 6 to
14 pixels, random colours). The zoo's ``TinyDetector`` (three stride-2 conv-BN-ReLU stages to a
4x4 grid, 3 square anchors of 6, 10 and 14 pixels per cell) predicts, for each of the 48
anchors, box offsets and class logits (background + 3 shapes). Targets are assigned SSD-style
in NumPy (an anchor is positive when its IoU with an object is >= 0.5, and each object's best
anchor is positive), and the loss is the cross-entropy averaged separately over positive and
negative anchors plus the L1 error of the positives' offsets. On held-out images, detections
(score >= 0.5, greedy non-maximum suppression) are matched to the objects: recall and precision
at IoU 0.5 with the right class, the mean IoU of each object's best box and the class accuracy
of those boxes, against the untrained detector and the best anchor without regression. The
trained detector is exported to ONNX and ONNX Runtime is checked against NumPy.

    python examples/detection.py                  # 800 steps of 32 images (about 15 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, parse_args, run_graph, stage

from lbdl_graph.frontends import F, Tensor, manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import DetectorConfig, TinyDetector
from lbdl_graph.passes.optim import Adam, CosineLR

SIZE = 32
CONFIG = DetectorConfig(image_size=SIZE, widths=(16, 32, 64), num_classes=3,
                        anchor_sizes=((0.75, 0.75), (1.25, 1.25), (1.75, 1.75)))
BATCH = 32


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (cx, cy, w, h) boxes: (n, 4) x (m, 4) -> (n, m)."""
    lo = np.maximum(a[:, None, :2] - a[:, None, 2:] / 2, b[None, :, :2] - b[None, :, 2:] / 2)
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    return inter / (np.prod(a[:, 2:], -1)[:, None] + np.prod(b[:, 2:], -1)[None] - inter)


def scenes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images (n, 3, SIZE, SIZE) and, per image, objects (k, 5): class, cx, cy, w, h (fractions)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    objects = []
    for i in range(n):
        images[i] = rng.uniform(0.0, 0.4, (3, 1, 1))
        objs: list[list[float]] = []
        while len(objs) < rng.integers(1, 4) or not objs:
            s = rng.uniform(6, 14)
            cx, cy = rng.uniform(s / 2, SIZE - s / 2, 2)
            box = np.array([[cx, cy, s, s]]) / SIZE
            if objs and iou(box, np.array(objs)[:, 1:]).max() > 0:
                continue
            kind = int(rng.integers(1, 4))
            dx, dy = np.abs(xx - cx), yy - cy + s / 2
            mask = [(dx <= s / 2) & (np.abs(dy - s / 2) <= s / 2),
                    dx**2 + (dy - s / 2) ** 2 <= (s / 2) ** 2,
                    (dy >= 0) & (dy <= s) & (dx <= dy / 2)][kind - 1]
            images[i][:, mask] = rng.uniform(0.5, 1.0, (3, 1))
            objs.append([kind, *box[0]])
        objects.append(np.array(objs))
    images += rng.normal(0.0, 0.03, images.shape).astype(np.float32)
    return images, objects


def targets(objects: list[np.ndarray], anchors: np.ndarray) -> np.ndarray:
    """(n, P, 6) float32: class (0 background), positive flag, the 4 target offsets."""
    out = np.zeros((len(objects), len(anchors), 6), np.float32)
    for i, objs in enumerate(objects):
        overlap = iou(anchors, objs[:, 1:])  # (P, k)
        match = overlap.argmax(1)
        pos = overlap.max(1) >= 0.5
        pos[overlap.argmax(0)] = True
        match[overlap.argmax(0)] = np.arange(len(objs))
        g = objs[match]
        out[i, :, 0] = np.where(pos, g[:, 0], 0)
        out[i, :, 1] = pos
        out[i, :, 2:4] = (g[:, 1:3] - anchors[:, :2]) / anchors[:, 2:]
        out[i, :, 4:] = np.log(g[:, 3:] / anchors[:, 2:])
    return out


def detection_loss(out: dict[str, Tensor], y: Tensor) -> Tensor:
    """Balanced cross-entropy (positives, negatives) + L1 on the positives' offsets."""
    pos, neg = y[..., 1], 1.0 - y[..., 1]
    ce = F.cross_entropy(out["logits"].permute(0, 2, 1), y[..., 0].long(), reduction="none")
    l1 = (out["deltas"] - y[..., 2:]).abs().sum(-1)
    npos = pos.sum().clamp(min=1.0)
    return (ce * pos).sum() / npos + (ce * neg).sum() / neg.sum() + (l1 * pos).sum() / npos


def detect(model: TinyDetector, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n, P, 4) and class probabilities (n, P, C + 1) of the eval graph on NumPy."""
    graph = trace(model, {"images": ("N", 3, SIZE, SIZE)}, training=False)
    out = run_graph(graph, {"images": x}, batch=256)
    logits = out["logits"] - out["logits"].max(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return out["boxes"], probs


def evaluate(boxes: np.ndarray, probs: np.ndarray, objects: list[np.ndarray]
             ) -> tuple[float, float, float, float]:
    """Recall and precision at IoU 0.5 (right class), mean best IoU, class accuracy."""
    hits = dets = 0
    best_iou, right = [], []
    for b, p, objs in zip(boxes, probs, objects, strict=True):
        score, label = p[:, 1:].max(1), p[:, 1:].argmax(1) + 1
        keep: list[int] = []
        for j in np.argsort(-score):  # greedy non-maximum suppression
            if score[j] >= 0.5 and (not keep or iou(b[j:j + 1], b[keep]).max() < 0.3):
                keep.append(j)
        overlap = iou(objs[:, 1:], b)  # (k, P): every box, for the best-IoU figures
        best_iou += list(overlap.max(1))
        right += list(label[overlap.argmax(1)] == objs[:, 0])
        dets += len(keep)
        if keep:
            ok = (overlap[:, keep] >= 0.5) & (label[keep][None] == objs[:, :1])
            hits += int(ok.any(1).sum())
    n = sum(len(o) for o in objects)
    return hits / n, hits / max(dets, 1), float(np.mean(best_iou)), float(np.mean(right))


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 800, "training steps")})
    steps = 4 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    xte, ote = scenes(rng, 64 if args.quick else 500)
    xtr, otr = scenes(rng, steps * BATCH)
    manual_seed(args.seed)
    model = TinyDetector(CONFIG)
    anchors = np.asarray(model.anchors)
    ytr = targets(otr, anchors)
    print(f"data: {len(xtr)} training images (each seen once), {len(xte)} held-out images with "
          f"{sum(len(o) for o in ote)} objects; {len(anchors)} anchors, "
          f"{ytr[..., 1].sum(1).mean():.1f} positive per training image")

    untrained = detect(model, xte)
    with stage(f"training on {args.backend}: {steps} steps of {BATCH}, "
               f"{model.num_parameters():,} parameters"):
        hist = fit(model, xtr, ytr, loss=detection_loss, epochs=1, batch_size=BATCH,
                   optimizer=Adam(CosineLR(3e-3, steps)), backend=args.backend,
                   seed=args.seed, progress=False)
    print(f"training loss (mean over the run): {hist['loss'][-1]:.4f}")

    anchor_iou = np.mean([iou(o[:, 1:], anchors).max(1).mean() for o in ote])
    print(f"best anchor without regression: mean IoU {anchor_iou:.3f}")
    for name, (b, p) in (("untrained", untrained), ("trained", detect(model, xte))):
        rec, prec, miou, acc = evaluate(b, p, ote)
        print(f"{name:<9} detector: recall@0.5 {rec:.3f}  precision@0.5 {prec:.3f}  "
              f"mean best IoU {miou:.3f}  class accuracy {acc:.3f}")

    graph = trace(model, {"images": ("N", 3, SIZE, SIZE)}, training=False)
    check_onnx(graph, {"images": xte[:64]}, args.out, "detection")


if __name__ == "__main__":
    main()
