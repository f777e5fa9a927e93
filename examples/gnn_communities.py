"""Graph neural networks (book, "The missing bits"): semi-supervised node classification on a
graph with planted communities.

A stochastic block model draws 4 communities of 60 nodes: two nodes of the same community are
linked with probability 0.1, of different ones with probability 0.01. Each node also has 16
noisy features whose mean depends weakly on its community. Only 10 nodes per community are
labelled for training (Kipf and Welling's setting); the rest are held out. The zoo's ``GCN``
(2 graph convolutions 16-32-4 over ``D^-1/2 (A + I) D^-1/2``, ReLU, dropout 0.5) is trained
full-batch with a compiled step whose loss is the cross-entropy of the labelled nodes only.
The same network is trained with the identity as adjacency (an MLP that ignores the edges), so
the run measures what the graph adds; chance is 25%. The trained GCN is exported to ONNX and
ONNX Runtime is checked against NumPy.

    python examples/gnn_communities.py            # 200 full-batch steps per model (about 1 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, parse_args, stage

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import F, InputSpec, Tensor, manual_seed, trace
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.frontends.zoo import GCN, GCNConfig, normalize_adjacency
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_train_step

COMMUNITIES, SIZE, FEATURES = 4, 60, 16
P_IN, P_OUT, LABELLED = 0.1, 0.01, 10


def planted_partition(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacency (N, N) 0/1, features (N, F) float32 and communities (N,) int64."""
    labels = np.repeat(np.arange(COMMUNITIES), SIZE)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(rng.random(same.shape) < np.where(same, P_IN, P_OUT), 1)
    means = rng.standard_normal((COMMUNITIES, FEATURES)) * 0.35
    x = (means[labels] + rng.standard_normal((len(labels), FEATURES))).astype(np.float32)
    return (upper | upper.T).astype(np.float32), x, labels.astype(np.int64)


def masked_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy over the labelled nodes: y[:, 0] is the class, y[:, 1] the label mask."""
    ce = F.cross_entropy(logits, y[:, 0].long(), reduction="none")
    return (ce * y[:, 1]).sum() / y[:, 1].sum()


def train(x: np.ndarray, adj: np.ndarray, y: np.ndarray, steps: int, backend: str,
          seed: int) -> GCN:
    """A fresh GCN trained full-batch for ``steps`` steps on the graph ``adj``."""
    manual_seed(seed)
    model = GCN(GCNConfig(in_features=FEATURES, hidden=(32,), num_classes=COMMUNITIES,
                          dropout=0.5))
    # the specs say that adj is (N, N): the node count is one symbolic dim
    fwd = trace_loss(model, {"x": InputSpec(("N", FEATURES)), "adj": InputSpec(("N", "N"))},
                     InputSpec(("N", 2)), masked_cross_entropy, {}, training=True)
    step = make_train_step(fwd, Adam(0.01, weight_decay=5e-4), seed=seed)
    runner = make_step_runner(step, backend)
    losses = [float(runner.step({"x": x, "adj": adj, "y": y})["loss"]) for _ in range(steps)]
    print(f"  training loss (labelled nodes): first step {losses[0]:.3f}, last {losses[-1]:.3f}")
    state = runner.state()
    model.load_state_dict({k: state.get(k, v) for k, v in model.state_dict().items()})
    return model


def accuracy(model: GCN, x: np.ndarray, adj: np.ndarray, labels: np.ndarray,
             nodes: np.ndarray) -> float:
    """Accuracy of the eval-mode graph (no dropout) on ``nodes``."""
    graph = trace(model, {"x": ("N", FEATURES), "adj": ("N", "N")}, training=False)
    logits = run(graph, {"x": x, "adj": adj}, training=False)["output"]
    return float(np.mean(logits.argmax(1)[nodes] == labels[nodes]))


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 200, "full-batch training steps")})
    steps = 5 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    a, x, labels = planted_partition(rng)
    train_nodes = np.concatenate([rng.choice(np.flatnonzero(labels == c), LABELLED,
                                             replace=False) for c in range(COMMUNITIES)])
    test_nodes = np.setdiff1d(np.arange(len(labels)), train_nodes)
    mask = np.zeros(len(labels), np.float32)
    mask[train_nodes] = 1.0
    y = np.stack([labels.astype(np.float32), mask], 1)
    same = labels[:, None] == labels[None, :]
    print(f"graph: {len(labels)} nodes in {COMMUNITIES} communities, {int(a.sum()) // 2} edges "
          f"({int((a * same).sum()) // 2} inside communities), mean degree {a.sum(1).mean():.1f};"
          f" {len(train_nodes)} labelled nodes, {len(test_nodes)} held out")

    adj = normalize_adjacency(a)
    eye = np.eye(len(labels), dtype=np.float32)
    manual_seed(args.seed)
    untrained = GCN(GCNConfig(in_features=FEATURES, hidden=(32,), num_classes=COMMUNITIES))
    results = {"chance": 1.0 / COMMUNITIES,
               "untrained GCN": accuracy(untrained, x, adj, labels, test_nodes)}
    with stage(f"training the GCN on {args.backend}: {steps} full-batch steps"):
        gcn = train(x, adj, y, steps, args.backend, args.seed)
    with stage(f"training the same network without edges (adjacency = I): {steps} steps"):
        mlp = train(x, eye, y, steps, args.backend, args.seed)
    results["features only (no edges)"] = accuracy(mlp, x, eye, labels, test_nodes)
    results["trained GCN"] = accuracy(gcn, x, adj, labels, test_nodes)
    for name, acc in results.items():
        print(f"held-out node accuracy: {name:<25} {acc:.3f}")

    graph = trace(gcn, {"x": ("N", FEATURES), "adj": ("N", "N")}, training=False)
    check_onnx(graph, {"x": x, "adj": adj}, args.out, "gnn_communities")


if __name__ == "__main__":
    main()
