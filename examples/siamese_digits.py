"""Siamese network (glossary): are two 8x8 digits the same digit?

The zoo's ``Siamese`` (a convnet encoder, the same weights on every branch) is trained on
the training images of scikit-learn digits 0-5 only, either on pairs with the margin
contrastive loss ``F.contrastive_loss`` (default, margin 2) or on (anchor, positive, negative)
triplets with ``F.triplet_margin_loss`` (``--loss triplet``: three branches). The encoder sees
each pixel standardised with the mean and standard deviation (plus 0.1) of those training
images, buffers of the model, so the exported model takes raw pixels. The losses read the MLP
head's 16-d output; verification compares the L2-normalised conv features below it (one 2x2
pooling stage, 32x4x4; dropout 0.3 before the head's last layer), as SimCLR keeps the layer
below its projection head. The score is the embedding distance; its threshold is the one that
best separates 2000 training pairs. Measured on balanced same/different pairs: verification
accuracy at that threshold and ROC AUC (our NumPy ``roc_auc``), against the raw-pixel distance
and the untrained encoder, on held-out images of the seen digits 0-5 and on the digits 6-9,
which training never saw. Unseen-class ROC AUC, seeds 0 / 1 / 2 / 3 / 4 (``--seed``): raw
pixels 0.892 / 0.889 / 0.903 / 0.884 / 0.886, trained encoder 0.932 / 0.924 / 0.943 / 0.922 /
0.934 (accuracy 0.853 / 0.836 / 0.857 / 0.846 / 0.863 against 0.811 / 0.799 / 0.826 / 0.805 /
0.797); seen-class AUC 0.962 / 0.963 / 0.965 / 0.973 / 0.966 against raw 0.873 / 0.896 /
0.887 / 0.885 / 0.894. Without the standardisation, with margin 1 and 600 steps (the earlier
default) unseen AUC was 0.916 / 0.889 / 0.942 at seeds 0 / 1 / 2. Taking the 16-d head output
instead of the conv features gave seen AUC 1.000 but unseen AUC 0.716 at seed 0: the head
specialises in the six classes it saw.
The trained pair model (two images -> distance) is exported to ONNX and ONNX Runtime
is checked against NumPy.

    OMP_NUM_THREADS=1 python examples/siamese_digits.py --seed S
        # 1200 steps of 64 pairs: 8.6-9.8 s CPU (user + system) at one thread
    OMP_NUM_THREADS=1 python examples/siamese_digits.py --loss triplet
        # 1200 steps of 64 triplets: 12.4 s CPU; seed 0: unseen AUC 0.921, seen 0.948
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, digits, parse_args, run_graph, stage

from lbdl_graph.frontends import F, Module, Tensor, manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.training.verification import (
    best_threshold,
    roc_auc,
    verification_accuracy,
)
from lbdl_graph.frontends.zoo import Siamese, SiameseConfig
from lbdl_graph.passes.optim import Adam, CosineLR

SEEN, UNSEEN = tuple(range(6)), tuple(range(6, 10))
BATCH = 64
MARGIN = 2.0
STD_FLOOR = 0.1  # added to each pixel's standard deviation
# the losses read the MLP head (a projection head); verification compares the L2-normalised
# conv features below it, one pooling stage only, with dropout before the head's last layer
CONFIG = SiameseConfig(pool_stages=1, dropout=0.3, embed_layer="features", normalize=True)


class Standardised(Module):
    """The encoder behind a fixed per-pixel standardisation ``(x - mean) / std``, the
    statistics of the training images (buffers: the exported model takes raw pixels)."""

    def __init__(self, net: Siamese, x_train: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", x_train.mean(0).astype(np.float32))
        # STD_FLOOR keeps the near-constant border pixels from being blown up
        self.register_buffer("scale", (1.0 / (x_train.std(0) + STD_FLOOR)).astype(np.float32))

    def standardise(self, x: Tensor) -> Tensor:
        """Images (N, 1, 8, 8) on the training set's per-pixel scale."""
        return (x - self.mean) * self.scale

    def project(self, x: Tensor) -> Tensor:
        """The head's output (N, D), the loss's input."""
        return self.net.project(self.standardise(x))

    def embed(self, x: Tensor) -> Tensor:
        """The verification embeddings (N, D)."""
        return self.net.embed(self.standardise(x))

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Euclidean distance (N,) between the embeddings of ``x1`` and ``x2``."""
        return F.pairwise_distance(self.embed(x1), self.embed(x2))


class Pairs(Module):
    """Two branches of one encoder: embeddings of both images of a pair."""

    def __init__(self, net: Standardised) -> None:
        super().__init__()
        self.net = net

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """Head outputs (N, D) of ``x1`` and of ``x2``, from the same parameters."""
        return self.net.project(x1), self.net.project(x2)


class Triplets(Module):
    """Three branches of one encoder: anchor, positive and negative embeddings."""

    def __init__(self, net: Standardised) -> None:
        super().__init__()
        self.net = net

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Head outputs (N, D) of the three images, from the same parameters."""
        net = self.net
        return net.project(anchor), net.project(positive), net.project(negative)


def pairs(y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` index pairs (i, j) into ``y``, half of the same class, half of different
    classes, and their labels (1 same, 0 different)."""
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    i = rng.integers(0, len(y), n)
    same = (np.arange(n) % 2 == 0).astype(np.int64)
    j = np.empty(n, np.int64)
    for k in range(n):
        pool = by_class[y[i[k]]]
        if same[k]:
            j[k] = rng.choice(pool[pool != i[k]])
        else:
            j[k] = rng.choice(np.flatnonzero(y != y[i[k]]))
    return i, j, same


def triplets(y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` index triplets: an anchor, another image of its class, one of another class."""
    anchor, positive, _ = pairs(y, 2 * n, rng)  # even rows: same-class pairs
    anchor, positive = anchor[0::2], positive[0::2]
    negative = np.array([rng.choice(np.flatnonzero(y != y[k])) for k in anchor])
    return anchor, positive, negative


def embed(net: Standardised, x: np.ndarray) -> np.ndarray:
    """Embeddings of ``x`` from the eval graph of one branch, run on NumPy."""
    g = trace(lambda x: net.embed(x), {"x": ("N", 1, 8, 8)}, module=net, training=False)
    return run_graph(g, {"x": x})["output"]


def scores(feats: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Similarity of each pair: minus the Euclidean distance of its features."""
    return -np.sqrt(((feats[i] - feats[j]) ** 2).sum(-1))


Result = tuple[float, float, float, float]  # threshold, train accuracy, accuracy, ROC AUC


def evaluate(feats: dict[str, np.ndarray], split: dict[str, tuple[np.ndarray, ...]]
             ) -> dict[str, Result]:
    """Per evaluation set: the distance threshold fitted on the training pairs, the training
    accuracy there, and the accuracy at that threshold and the ROC AUC on the set."""
    i, j, same = split["train"]
    t, train_acc = best_threshold(scores(feats["train"], i, j), same)
    out = {}
    for key in ("seen", "unseen"):
        i, j, same = split[key]
        s = scores(feats[key], i, j)
        out[key] = (-t, train_acc, verification_accuracy(s, same, t), roc_auc(s, same))
    return out


def report(results: dict[str, dict[str, Result]]) -> None:
    """One block per evaluation set, one line per method."""
    for key, title in (("seen", "held-out images of the seen digits 0-5 (1000 pairs)"),
                       ("unseen", "digits 6-9, never seen in training (2000 pairs)")):
        print(f"verification on {title}:")
        for name, res in results.items():
            t, train_acc, acc, auc = res[key]
            print(f"  {name:<18} accuracy {acc:.3f}  ROC AUC {auc:.3f}  (distance threshold "
                  f"{t:.3f} from the training pairs, accuracy there {train_acc:.3f})")


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 1200, "training steps"),
                                      "loss": (str, "contrastive", "contrastive or triplet")})
    if args.loss not in ("contrastive", "triplet"):
        raise SystemExit(f"--loss must be 'contrastive' or 'triplet', got {args.loss!r}")
    steps = 4 if args.quick else args.steps
    xtr, ytr, xte, yte = digits(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    seen_tr = np.isin(ytr, SEEN)
    x_train, y_train = xtr[seen_tr], ytr[seen_tr]  # the only images training ever sees
    x_seen, y_seen = xte[np.isin(yte, SEEN)], yte[np.isin(yte, SEEN)]
    x_all, y_all = np.r_[xtr, xte], np.r_[ytr, yte]
    x_unseen, y_unseen = x_all[np.isin(y_all, UNSEEN)], y_all[np.isin(y_all, UNSEEN)]
    images = {"train": x_train, "unseen": x_unseen, "seen": x_seen}
    split = {"train": pairs(y_train, 2000, rng), "unseen": pairs(y_unseen, 2000, rng),
             "seen": pairs(y_seen, 1000, rng)}
    print(f"data: {len(x_train)} training images of digits 0-5; evaluation on 2000 balanced "
          f"pairs of {len(x_unseen)} images of the unseen digits 6-9 and 1000 pairs of "
          f"{len(x_seen)} held-out images of 0-5 (chance accuracy 0.500, AUC 0.500)")

    manual_seed(args.seed)
    net = Standardised(Siamese(CONFIG), x_train)
    results = {"raw pixels": evaluate({k: v.reshape(len(v), -1) for k, v in images.items()},
                                      split),
               "untrained encoder": evaluate({k: embed(net, v) for k, v in images.items()},
                                             split)}

    n = steps * BATCH
    model: Module
    if args.loss == "contrastive":
        i, j, same = pairs(y_train, n, rng)
        model, data, y = Pairs(net), {"x1": x_train[i], "x2": x_train[j]}, same.astype(
            np.float32)

        def loss(out: tuple[Tensor, ...], target: Tensor) -> Tensor:
            return F.contrastive_loss(out[0], out[1], target, margin=MARGIN)
    else:
        a, p, q = triplets(y_train, n, rng)
        model, data, y = Triplets(net), {"anchor": x_train[a], "positive": x_train[p],
                                         "negative": x_train[q]}, None

        def loss(out: tuple[Tensor, ...], _: Tensor) -> Tensor:
            return F.triplet_margin_loss(out[0], out[1], out[2], margin=MARGIN)

    with stage(f"training on {args.backend}: {steps} steps of {BATCH} "
               f"{'pairs' if args.loss == 'contrastive' else 'triplets'}, "
               f"{net.num_parameters():,} shared parameters, {args.loss} loss "
               f"(margin {MARGIN})"):
        hist = fit(model, data, y, loss=loss, epochs=1, batch_size=BATCH, shuffle=False,
                   backend=args.backend, optimizer=Adam(CosineLR(3e-3, steps)),
                   seed=args.seed, progress=False)
    print(f"{args.loss} loss (mean over the run) {hist['loss'][-1]:.4f}")
    results["trained Siamese"] = evaluate({k: embed(net, v) for k, v in images.items()},
                                          split)
    report(results)

    graph = trace(net, {"x1": ("N", 1, 8, 8), "x2": ("N", 1, 8, 8)}, training=False)
    i, j, _ = split["unseen"]
    check_onnx(graph, {"x1": x_unseen[i[:256]], "x2": x_unseen[j[:256]]}, args.out,
               "siamese_digits")


if __name__ == "__main__":
    main()
