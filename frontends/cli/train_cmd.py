"""``lbdl-graph train MODEL``: train a zoo model on a bundled data set, check and export it.

The main job is ``lbdl-graph train lenet``: the zoo's ``lenet_digits`` network on
scikit-learn's 8x8 digits (fixed-seed held-out test split), trained with a compiled training
step, then evaluated on the NumPy backend, exported to ONNX, checked against ONNX Runtime,
optimised at O2 and drawn. Every file goes to ``--out`` atomically.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.graph import Graph

from .common import CliError, UsageError, atomic_write, check_output, numpy_eval, optimize

__all__ = ["RECIPES", "Recipe", "digits_split", "register"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the held-out test split never changes with --seed
TARGET_ACCURACY = 0.97
# max abs logit difference tolerated between NumPy and ONNX Runtime, relative to the largest
# logit (at least 1); GPUs may round float32 matmuls and convolutions to TF32
AGREE_RTOL = {"CPUExecutionProvider": 1e-4}
AGREE_RTOL_GPU = 1e-2

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def digits_split(layout: str = "image") -> Data:
    """scikit-learn's digits scaled to [0, 1] as ``(x_train, y_train, x_test, y_test)``.

    ``layout``: ``"image"`` (N, 1, 8, 8), ``"flat"`` (N, 64) or ``"mnist"`` (N, 1, 28, 28):
    upsampled x3 (nearest) and zero-padded by 2, like the ``lenet_digits`` graph does inside.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    if layout == "flat":
        x = x.reshape(len(x), -1)
    elif layout == "mnist":
        x = np.pad(x.repeat(3, axis=2).repeat(3, axis=3), ((0, 0), (0, 0), (2, 2), (2, 2)))
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = round(len(x) * TEST_FRACTION)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


@dataclass(frozen=True)
class Recipe:
    """How ``train NAME`` builds the model, which data it uses and its default settings."""

    zoo: str
    data: str  # digits_split layout
    epochs: int
    lr: float
    batch_size: int
    build: Callable[[], Any] | None = None  # default: the zoo entry's model

    def model(self) -> Any:
        """A freshly initialised model (seed it first)."""
        from lbdl_graph.frontends.zoo import ZOO

        return self.build() if self.build is not None else ZOO[self.zoo].model()


def _mlp_digits() -> Any:
    from lbdl_graph.frontends.zoo import MLP, MLPConfig

    return MLP(MLPConfig(in_features=64))


_LENET = Recipe("lenet_digits", "image", epochs=15, lr=2e-3, batch_size=32)

#: Models ``train`` knows a default data set for.
RECIPES: dict[str, Recipe] = {
    "lenet": _LENET,
    "lenet_digits": _LENET,
    "lenet5": Recipe("lenet5", "mnist", epochs=10, lr=3e-3, batch_size=32),
    "mlp": Recipe("mlp", "flat", epochs=20, lr=1e-3, batch_size=32, build=_mlp_digits),
}


def _trace_eval(model: Any, name: str, sample: np.ndarray) -> Graph:
    from lbdl_graph.frontends.trace import InputSpec, trace

    spec = InputSpec(("N", *sample.shape[1:]), "float32", "x")
    return trace(model, {"x": spec}, name=name, training=False)


def _batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int = 256
             ) -> np.ndarray:
    return np.concatenate([fn(x[i:i + size]) for i in range(0, len(x), size)])


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _check_args(args: argparse.Namespace, recipe: Recipe) -> None:
    for name in ("epochs", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    args.epochs = args.epochs or recipe.epochs
    args.batch_size = args.batch_size or recipe.batch_size
    args.lr = args.lr or recipe.lr


def _communicator(args: argparse.Namespace) -> Any:
    """The MPI ranks for ``--distributed`` (None without it); checks the global batch."""
    if not args.distributed:
        return None
    from lbdl_graph.errors import DistributedError
    from lbdl_graph.frontends.training.distributed import Communicator

    try:
        comm = Communicator.world()
    except DistributedError as e:
        raise UsageError(f"--distributed: {e.message}") from None
    if args.batch_size % comm.size:
        raise UsageError(f"--batch-size {args.batch_size} (the global batch) must be divisible "
                         f"by the {comm.size} ranks")
    return comm


def _train(args: argparse.Namespace, recipe: Recipe, data: Data, comm: Any = None
           ) -> tuple[Any, Any, float]:
    """Seed, build and fit the model; returns (model, history, seconds)."""
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.training import fit
    from lbdl_graph.frontends.training.sampler import DistributedSampler
    from lbdl_graph.passes.optim import Adam, CosineLR

    xtr, ytr, xte, _ = data
    manual_seed(args.seed)
    model = recipe.model()
    size = comm.size if comm is not None else 1
    say = print if comm is None or comm.rank == 0 else _quiet
    per_rank = args.batch_size // size
    per_epoch = DistributedSampler(len(xtr), 0, size).steps_per_epoch(per_rank)
    say(f"data: scikit-learn digits, {len(xtr)} train / {len(xte)} held-out test "
        f"(split seed {SPLIT_SEED}); {model.num_parameters():,} parameters")
    ranks = f" on {size} ranks ({per_rank} per rank)" if comm is not None else ""
    say(f"training on {args.backend}: {args.epochs} epoch{'s' * (args.epochs > 1)} x "
        f"{per_epoch} steps, batch {args.batch_size}{ranks}, Adam lr {args.lr:g} (cosine "
        f"decay), seed {args.seed}", flush=True)
    t0 = time.perf_counter()
    history = fit(model, xtr, ytr, metrics=["accuracy"], epochs=args.epochs,
                  batch_size=per_rank, seed=args.seed, backend=args.backend,
                  optimizer=Adam(CosineLR(args.lr, args.epochs * per_epoch)),
                  distributed=comm if comm is not None else False,
                  sync_batch_norm=args.sync_batch_norm)
    seconds = time.perf_counter() - t0
    if comm is not None and comm.rank != 0:
        return model, history, seconds
    for e in history.epochs:
        print(f"  epoch {int(e['epoch']):>2}/{args.epochs}  loss {e['loss']:.4f}  "
              f"train accuracy {e['accuracy'] * 100:6.2f}%  {e['seconds']:.1f} s")
    return model, history, seconds


def _output_dir(args: argparse.Namespace, comm: Any) -> Path:
    """The checked output directory; with ranks, rank 0 checks it and all agree on the outcome."""
    path = args.out or f"runs/{args.model}"
    if comm is None:
        return check_output(path, mkdir=True)
    from lbdl_graph.errors import DistributedError

    error = None
    if comm.rank == 0:
        try:
            check_output(path, mkdir=True)
        except CliError as e:
            error = e
    try:
        comm.agree(error, "output directory check")
    except DistributedError as e:
        raise CliError(e.message) from None
    return Path(path)


def _quiet(*_: Any, **__: Any) -> None:
    """print() for the ranks that do not log."""


def _ort_logits(path: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Logits of the ONNX model at ``path`` on ONNX Runtime, and the provider used."""
    from lbdl_graph.backends.onnx import OrtRunner

    runner = OrtRunner(path)
    return _batched(lambda b: runner.run({"x": b})["output"], x), runner.providers[0]


def _agreement(ort_logits: np.ndarray, logits: np.ndarray, provider: str) -> tuple[bool, str]:
    """Whether ONNX Runtime's logits agree with NumPy's, and the line reporting it."""
    diff = float(np.max(np.abs(ort_logits.astype(np.float64) - logits)))
    pred = logits.argmax(1)
    same = int((ort_logits.argmax(1) == pred).sum())
    tol = AGREE_RTOL.get(provider, AGREE_RTOL_GPU) * max(1.0, float(np.abs(logits).max()))
    agree = same == len(pred) and diff <= tol
    return agree, (f"onnxruntime ({provider}) vs numpy on the test set: max abs logit diff "
                   f"{diff:.3g}, equal predictions {same}/{len(pred)} "
                   f"[{'agree' if agree else 'DISAGREE'} within {tol:.2g}]")


def _optimise_and_draw(out: Path, graph: Graph, logits: np.ndarray, x: np.ndarray,
                       acc: float) -> list[tuple[Path, str]]:
    """Write the O2 model, its SVG, the before/after SVG and summary.txt; returns the files."""
    from lbdl_graph.backends.onnx import save_onnx
    from lbdl_graph.frontends.inspect import diff_svg, diff_text, summary, to_svg

    opt, report, rules = optimize(graph, "O2", check=True, inference=True)
    files = [(out / "model_O2.onnx", "O2-optimised model"), (out / "graph_O2.svg", "the O2 graph"),
             (out / "graph_O2_diff.svg", "before/after O2"),
             (out / "summary.txt", "layer summary, O2 pass report and diff")]
    save_onnx(opt, files[0][0], training=False)
    o2_logits, _ = _ort_logits(files[0][0], x)
    o2_diff = float(np.max(np.abs(o2_logits.astype(np.float64) - logits)))
    print(f"O2: {len(graph.nodes)} -> {len(opt.nodes)} nodes; onnxruntime O2 vs numpy max abs "
          f"logit diff {o2_diff:.3g}")
    atomic_write(files[1][0], to_svg(opt, title=f"{graph.name} (O2)"))
    atomic_write(files[2][0], diff_svg(graph, opt, rule_names=rules))
    text = "\n\n".join([str(summary(graph)), str(report), diff_text(graph, opt, rule_names=rules),
                        f"test accuracy: {acc * 100:.2f}%\n"])
    atomic_write(files[3][0], text)
    return files


def _write_explorer(out: Path, model: Any, graph: Graph, sample: np.ndarray
                    ) -> list[tuple[Path, str]]:
    """Model Explorer files of the trained model: every O2 stage, the O0 -> O2 diff, the
    training step and the ONNX Runtime graph, in ``out/explorer/``; returns the graph file."""
    from lbdl_graph.frontends.inspect import explore
    from lbdl_graph.frontends.trace import InputSpec
    from lbdl_graph.frontends.training.trainer import trace_loss
    from lbdl_graph.passes.optim import Adam
    from lbdl_graph.passes.train_step import make_train_step

    x = InputSpec(("N", *sample.shape[1:]), "float32", "x")
    fwd = trace_loss(model, {"x": x}, InputSpec(("N",), "int64", "y"), "cross_entropy", {},
                     training=True)
    step = make_train_step(fwd, Adam())
    files = explore(graph, level="O2", compare="O0", train=step, out=out / "explorer")
    assert isinstance(files, list)
    return [(files[0], f"Model Explorer graphs (+{len(files) - 1} overlays in explorer/)")]


def _run(args: argparse.Namespace) -> int:
    from lbdl_graph.backends.onnx import save_onnx
    from lbdl_graph.frontends.training import save_checkpoint
    from lbdl_graph.frontends.zoo import ZOO

    recipe = RECIPES.get(args.model)
    if recipe is None:
        raise UsageError(f"no training recipe for {args.model!r}; trainable: "
                         f"{', '.join(RECIPES)}")
    _check_args(args, recipe)
    comm = _communicator(args)
    lead = comm is None or comm.rank == 0  # only rank 0 logs, evaluates and writes files
    out = _output_dir(args, comm)
    t_start = time.perf_counter()
    if lead:
        print(f"train {args.model}: {recipe.zoo} ({ZOO[recipe.zoo].description})")
    data = digits_split(recipe.data)
    xtr, _, xte, yte = data
    model, history, t_train = _train(args, recipe, data, comm)
    if not lead:
        return 0

    t0 = time.perf_counter()
    graph = _trace_eval(model, recipe.zoo, xtr)
    logits = _batched(lambda b: numpy_eval(graph, {"x": b})["output"], xte)
    right = int((logits.argmax(1) == yte).sum())
    acc = right / len(yte)
    t_eval = time.perf_counter() - t0
    verdict = "ok" if acc >= TARGET_ACCURACY else "below target"
    print(f"test accuracy: {acc * 100:.2f}% ({right}/{len(yte)}) on the NumPy backend "
          f"[target >= {TARGET_ACCURACY * 100:.0f}%: {verdict}]")

    t0 = time.perf_counter()
    meta = {"model": args.model, "zoo": recipe.zoo, "epochs": args.epochs, "lr": args.lr,
            "batch_size": args.batch_size, "seed": args.seed, "backend": args.backend,
            "test_accuracy": acc, "history": history.epochs}
    files = [(out / "checkpoint.safetensors", "trained weights (safetensors)"),
             (out / "model.onnx", "trained model, evaluation mode")]
    save_checkpoint(files[0][0], model.state_dict(), meta)
    save_onnx(graph, files[1][0], training=False)
    ort_logits, provider = _ort_logits(files[1][0], xte)
    agree, line = _agreement(ort_logits, logits, provider)
    print(line)
    t_export = time.perf_counter() - t0

    t0 = time.perf_counter()
    files += _optimise_and_draw(out, graph, logits, xte, acc)
    files += _write_explorer(out, model, graph, xtr)
    t_opt = time.perf_counter() - t0
    print(f"times: train {t_train:.1f} s, evaluate {t_eval:.1f} s, export+check {t_export:.1f} s"
          f", optimise+draw {t_opt:.1f} s, total {time.perf_counter() - t_start:.1f} s")
    print(f"files in {out}/:")
    for path, what in files:
        print(f"  {path.name:<24}{_fmt_bytes(path.stat().st_size):>10}  {what}")
    print(f"interactive view of every stage: lbdl-graph explore {out / 'model.onnx'} "
          "--compare O0")
    if not agree:
        raise CliError("ONNX Runtime and NumPy disagree on the test set (see above)")
    return 0


def register(sub: Any) -> None:
    """Add the ``train`` verb."""
    p = sub.add_parser("train", help="train a zoo model on its default data set (lenet: digits)",
                       description="Train a model, report held-out accuracy, export it to ONNX, "
                                   "check ONNX Runtime against NumPy, draw the O2 graph and write "
                                   "its Model Explorer files.")
    p.add_argument("model", nargs="?", default="lenet",
                   help=f"model to train (default lenet); one of {', '.join(RECIPES)}")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: per model, 15 for lenet)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak Adam learning rate, decayed by a cosine (default: per model)")
    p.add_argument("--backend", choices=("numpy", "onnxruntime"), default="onnxruntime",
                   help="backend running the training step (default onnxruntime)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    p.add_argument("--out", default=None, help="output directory (default runs/MODEL)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks of mpiexec -n N (--batch-size is the "
                        "global batch, split over the ranks; rank 0 logs and writes the files)")
    p.add_argument("--sync-batch-norm", action="store_true",
                   help="with --distributed: batch norms use the statistics of the global "
                        "batch (all-reduced over the ranks) instead of each rank's own")
    p.set_defaults(func=_run)
