"""Relational reasoning (glossaries; Santoro et al. 2017): a relation network on Sort-of-CLEVR.

Each scene holds 6 objects, one of each colour (red, green, blue, orange, grey, yellow), at
random positions in a 6 x 6 square, each a circle or a square. An object is given as a vector
(colour one-hot, x, y, shape one-hot), and the objects of a scene come in a random order: the
scene is a set. A question is a colour one-hot and a question-type one-hot; the answers are
circle/square, yes/no or a count 0-6 (11 classes). Three question types are non-relational
(the shape of the red object; is it on the left half; is it in the top half) and four are
relational: how many objects are left of the red one; how many lie within distance 2 of it;
how many have its shape (itself included); the shape of the object nearest to it.

The zoo's ``RelationNetwork`` sums ``g_theta`` over all 36 ordered pairs of objects (built in
the graph by broadcasting, the object count a symbolic dim) and answers with ``f_phi``. Held-out
accuracy is reported for non-relational and relational questions (and per type) against
baselines from the same run: the majority answer of each question type, and an MLP over the
concatenated objects and question with about as many parameters, trained for the same steps
with the same optimiser on the same questions (each seen once). The trained network is
exported to ONNX (object count symbolic) and ONNX Runtime is checked against NumPy.

The nearest-object question is the slow one: it sits at the accuracy of "the shape most of
the other objects have" (about 0.69) for thousands of steps before the network learns the
geometry (at 6000 steps it had not yet; at 8000 it reaches 0.88-0.91 on seeds 0 and 1).

    python examples/relation_network.py     # 8000 steps of 64 per model (about 50 s of one core)"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, parse_args, run_graph, stage

from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.module import Module
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import MLP, MLPConfig, RelationNetwork, RelationNetworkConfig
from lbdl_graph.passes.optim import Adam, CosineLR

COLOURS = ("red", "green", "blue", "orange", "grey", "yellow")
SHAPES = ("circle", "square")
SIDE, NEAR = 6.0, 2.0  # objects lie in a SIDE x SIDE square; "near": closer than NEAR
QUESTIONS = ("shape of the {} object", "is the {} object on the left",
             "is the {} object at the top", "how many objects are left of the {} one",
             f"how many objects are within {NEAR} of the {{}} one",
             "how many objects have the shape of the {} one",
             "shape of the object nearest to the {} one")
RELATIONAL = (False, False, False, True, True, True, True)
ANSWERS = (*SHAPES, "yes", "no", *(str(k) for k in range(7)))
K, OBJ = len(COLOURS), len(COLOURS) + 2 + len(SHAPES)  # objects per scene, object features
QDIM = len(COLOURS) + len(QUESTIONS)


def scenes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` (scene, question, answer) samples: objects (n, K, OBJ) in a random order,
    questions (n, QDIM), question types (n,) and answers (n,) int64."""
    colour = rng.permuted(np.tile(np.arange(K), (n, 1)), axis=1)  # colour of each slot
    pos = SIDE * rng.random((n, K, 2))
    shape = rng.integers(0, 2, (n, K))
    objects = np.concatenate([np.eye(K)[colour], pos, np.eye(2)[shape]], -1)
    asked, kind = rng.integers(0, K, n), rng.integers(0, len(QUESTIONS), n)
    rows = np.arange(n)
    s = np.argmax(colour == asked[:, None], 1)  # the slot of the object asked about
    me = pos[rows, s]
    dist = np.linalg.norm(pos - me[:, None], axis=-1)
    other = np.arange(K) != s[:, None]
    nearest = np.where(other, dist, np.inf).argmin(1)
    count = 4 + np.select(  # the answer index of the count 0..6
        [kind == 3, kind == 4],
        [(pos[..., 0] < me[:, None, 0]).sum(1), (other & (dist < NEAR)).sum(1)],
        (shape == shape[rows, s][:, None]).sum(1))  # counts the object itself: 1..K
    answer = np.select([kind == 0, kind == 1, kind == 2, kind == 6],
                       [shape[rows, s], np.where(me[:, 0] < SIDE / 2, 2, 3),
                        np.where(me[:, 1] < SIDE / 2, 2, 3), shape[rows, nearest]], count)
    question = np.concatenate([np.eye(K)[asked], np.eye(len(QUESTIONS))[kind]], -1)
    return {"objects": objects.astype(np.float32), "question": question.astype(np.float32),
            "kind": kind, "answer": answer.astype(np.int64)}


def flat(data: dict[str, np.ndarray]) -> np.ndarray:
    """The MLP's input: the objects in their (random) order, then the question."""
    return np.concatenate([data["objects"].reshape(len(data["objects"]), -1),
                           data["question"]], 1)


def train(model: Module, x: object, y: np.ndarray, steps: int, backend: str, seed: int
          ) -> float:
    """Train ``model`` for ``steps`` Adam steps of 64 (5e-3, cosine schedule); the mean loss."""
    hist = fit(model, x, y, loss="cross_entropy", epochs=10_000, batch_size=64,
               max_steps=steps, optimizer=Adam(CosineLR(5e-3, steps)), backend=backend,
               seed=seed, progress=False)
    return float(hist["loss"][-1])


def report(name: str, pred: np.ndarray, test: dict[str, np.ndarray]) -> None:
    """Held-out accuracy of ``pred`` on non-relational and relational questions."""
    right = pred == test["answer"]
    rel = np.asarray(RELATIONAL)[test["kind"]]
    per_type = " ".join(f"{right[test['kind'] == t].mean():.2f}" for t in range(len(QUESTIONS)))
    print(f"held-out accuracy: {name:<34} non-relational {right[~rel].mean():.3f}  "
          f"relational {right[rel].mean():.3f}  (per type {per_type})", flush=True)


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 8000, "training steps per model")})
    steps = 5 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    train_set, test = scenes(rng, 64 * max(steps, 100)), scenes(rng, 3000)
    print(f"Sort-of-CLEVR: {K} objects per scene, {len(QUESTIONS)} question types, "
          f"{len(ANSWERS)} answers; {len(train_set['answer'])} training and {len(test['answer'])}"
          " held-out questions")
    print("question types, in the order of the per-type figures: "
          + "; ".join(f"{q.format(COLOURS[0])}?" for q in QUESTIONS))
    majority = np.array([np.bincount(train_set["answer"][train_set["kind"] == t],
                                     minlength=len(ANSWERS)).argmax()
                         for t in range(len(QUESTIONS))])
    report("majority answer per type (baseline)", majority[test["kind"]], test)

    manual_seed(args.seed)
    rn = RelationNetwork(RelationNetworkConfig(object_dim=OBJ, question_dim=QDIM,
                                               num_answers=len(ANSWERS)))
    hidden = 88  # an MLP 73-88-88-11 has about as many parameters as the relation network
    manual_seed(args.seed)
    mlp = MLP(MLPConfig(in_features=K * OBJ + QDIM, hidden=(hidden, hidden),
                        out_features=len(ANSWERS)))
    with stage(f"training the MLP on concatenated objects (baseline): {steps} steps of 64, "
               f"{mlp.num_parameters():,} parameters, on {args.backend}"):
        loss = train(mlp, flat(train_set), train_set["answer"], steps, args.backend, args.seed)
    print(f"  mean training loss over the run (each question seen once) {loss:.4f}")
    with stage(f"training the relation network: {steps} steps of 64, "
               f"{rn.num_parameters():,} parameters, on {args.backend}"):
        feeds = {k: train_set[k] for k in ("objects", "question")}
        loss = train(rn, feeds, train_set["answer"], steps, args.backend, args.seed)
    print(f"  mean training loss over the run (each question seen once) {loss:.4f}")

    mlp_graph = trace(mlp, {"x": ("N", K * OBJ + QDIM)}, training=False)
    report("MLP, same steps (baseline)", run_graph(mlp_graph, {"x": flat(test)})["output"]
           .argmax(1), test)
    spec = {"objects": InputSpec(("N", "S", OBJ)), "question": InputSpec(("N", QDIM))}
    graph = trace(rn, spec, training=False)
    test_feeds = {k: test[k] for k in ("objects", "question")}
    report("relation network", run_graph(graph, test_feeds)["output"].argmax(1), test)
    check_onnx(graph, {k: v[:256] for k, v in test_feeds.items()}, args.out, "relation_network")


if __name__ == "__main__":
    main()
