"""Shared plumbing of the example scripts: command line, data, timing and the ONNX check.

Every example trains a model with lbdl-graph's compiled training step, measures what it
learned against a baseline from the same run, then calls :func:`check_onnx`: the trained
inference graph is exported to ONNX, run on ONNX Runtime and compared with the NumPy
reference interpreter. A disagreement makes the script exit with status 1.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.backends.numpy import run
from lbdl_graph.backends.onnx import OrtRunner, save_onnx
from lbdl_graph.graph import Graph

__all__ = ["agreement", "blobs", "check_onnx", "digits", "energy_distance", "parse_args",
           "report_blobs", "run_graph", "stage"]

CPU_RTOL = 1e-4  # max abs difference allowed, relative to the largest output magnitude (>= 1)
GPU_RTOL = 1e-2  # CUDA may compute float32 matmuls and convolutions in TF32


def parse_args(doc: str | None, backend: str = "onnxruntime",
               extra: Mapping[str, tuple[type, Any, str]] | None = None) -> argparse.Namespace:
    """``--quick``, ``--seed``, ``--out``, ``--backend`` and the script's own ``extra`` options
    (name -> (type, default, help))."""
    p = argparse.ArgumentParser(description=(doc or "").strip().split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few steps only (used by the tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    p.add_argument("--out", type=Path, default=Path("runs/examples"),
                   help="directory for the exported ONNX model (default: runs/examples)")
    p.add_argument("--backend", choices=("numpy", "onnxruntime"), default=backend,
                   help=f"backend running the training step (default: {backend})")
    for name, (typ, default, text) in (extra or {}).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, default=default, help=text)
    return p.parse_args()


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Print ``what`` and, when the block ends, how long it took."""
    print(f"{what} ...", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits in [0, 1] as ``(x_train, y_train, x_test, y_test)``, x of
    shape (N, 1, 8, 8) float32, y int64; the split is fixed by ``seed``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray], batch: int = 512
              ) -> dict[str, np.ndarray]:
    """Run an inference graph on NumPy in batches along the first axis of every feed."""
    n = len(next(iter(feeds.values())))
    parts = [run(graph, {k: v[i:i + batch] for k, v in feeds.items()}, training=False)
             for i in range(0, n, batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def agreement(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], provider: str
              ) -> tuple[float, bool]:
    """Largest absolute difference between NumPy's outputs ``ref`` and ONNX Runtime's ``got``,
    and whether they agree: integer outputs exactly, float outputs within CPU_RTOL (GPU_RTOL
    on another provider) times the output's largest magnitude (at least 1)."""
    rtol = CPU_RTOL if provider == "CPUExecutionProvider" else GPU_RTOL
    worst, ok = 0.0, True
    for k, v in ref.items():
        a, b = np.asarray(got[k], np.float64), np.asarray(v, np.float64)
        diff = float(np.max(np.abs(a - b), initial=0.0))
        tol = rtol * max(1.0, float(np.max(np.abs(b), initial=0.0)))
        ok = ok and diff <= (tol if np.asarray(v).dtype.kind == "f" else 0.0)
        worst = max(worst, diff)
    return worst, ok


def check_onnx(graph: Graph, feeds: Mapping[str, np.ndarray], out_dir: Path, name: str
               ) -> float:
    """Export ``graph`` to ``out_dir/name.onnx``, run it on ONNX Runtime and on NumPy with
    ``feeds``, print the largest difference; exit with status 1 if they disagree."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_onnx(graph, out_dir / f"{name}.onnx", training=False)
    runner = OrtRunner(path)
    provider = runner.providers[0]
    diff, ok = agreement(run(graph, feeds, training=False), runner.run(feeds), provider)
    rtol = CPU_RTOL if provider == "CPUExecutionProvider" else GPU_RTOL
    print(f"onnx: wrote {path} ({path.stat().st_size / 1024:.0f} KiB); onnxruntime "
          f"({provider}) vs numpy on {len(next(iter(feeds.values())))} inputs: max abs diff "
          f"{diff:.3g} [{'agree' if ok else 'DISAGREE'} within {rtol:g} x max(1, |output|)]",
          flush=True)
    if not ok:
        raise SystemExit(1)
    return diff


# ---------------------------------------------------------------- 2-D point clouds

BLOB_STD = 0.15
BLOB_CENTRES = 2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4),
                               np.sin(np.arange(8) * np.pi / 4)], 1)


def blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points (n, 2) float32 from a ring of 8 Gaussian blobs (radius 2, std 0.15)."""
    return (BLOB_CENTRES[rng.integers(8, size=n)] + BLOB_STD * rng.standard_normal((n, 2))
            ).astype(np.float32)


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """2 E|A - B| - E|A - A'| - E|B - B'|: zero iff the two distributions agree."""
    def mean_dist(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.sqrt(((u[:, None] - v[None]) ** 2).sum(-1)).mean())
    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def report_blobs(name: str, pts: np.ndarray, ref: np.ndarray) -> None:
    """Print the energy distance of ``pts`` to data ``ref``, the blobs covered (>= 2% of the
    points within 3 std of the centre) and the share of points within 3 std of a blob."""
    d = np.sqrt(((pts[:, None] - BLOB_CENTRES[None]) ** 2).sum(-1))
    near = d.min(1) < 3 * BLOB_STD
    covered = int((np.bincount(d.argmin(1)[near], minlength=8) >= 0.02 * len(pts)).sum())
    print(f"{name:<26} energy distance {energy_distance(pts, ref):.4f}  blobs covered "
          f"{covered}/8  within 3 std of a blob {near.mean():.1%}", flush=True)
