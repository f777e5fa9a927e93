"""Run under ``mpiexec -n N``: ``fit(distributed=True)`` end to end, figures as JSON on rank 0.

``fit_run.py DIR``: in ``DIR`` ``full.ckpt`` (3 epochs straight), ``stopped.ckpt`` (stopped
mid-epoch by max_steps, kept as ``stopped_copy.ckpt``), then resumed to the end. Rank 0
also trains one process with the global batch and reports how far each run is from the others.
``fit_run.py resume SRC DST`` resumes ``SRC`` at this world size and writes ``DST``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.frontends import manual_seed, nn
from lbdl_graph.frontends.training import fit, load_checkpoint
from lbdl_graph.frontends.training.distributed import Communicator
from lbdl_graph.passes.optim import Adam

GLOBAL_BATCH = 16


def data() -> tuple[np.ndarray, np.ndarray]:
    """A small 3-class problem (96 samples)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype(np.float32)
    return x, (x[:, :3].argmax(1)).astype(np.int64)


def model() -> Any:
    """The same initial weights on every rank."""
    manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3))


def bn_model() -> Any:
    """A model with batch norm, for ``fit(sync_batch_norm=True)``."""
    manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 3))  # no bias before BN: its gradient is zero


def settings(batch: int) -> dict[str, Any]:
    """fit's keyword arguments (validation, metrics, checkpoints)."""
    return {"metrics": ["accuracy"], "optimizer": Adam(1e-2), "epochs": 3, "batch_size": batch,
            "validation_split": 1 / 6, "backend": "numpy"}


def rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """||a - b|| / ||b|| over the float tensors both hold."""
    keys = [k for k in b if b[k].dtype.kind == "f"]
    d = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in keys)
    return float(np.sqrt(d / sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in keys)))


def main() -> None:
    comm = Communicator.world(timeout=60)
    x, y = data()
    per_rank = GLOBAL_BATCH // comm.size
    if sys.argv[1] == "resume":  # resume SRC, written to DST, at this world size
        fit(model(), x, y, **settings(per_rank), resume=sys.argv[2], checkpoint=sys.argv[3],
            distributed=comm)
        return
    out = Path(sys.argv[1])
    m = model()
    h = fit(m, x, y, **settings(per_rank), checkpoint=out / "full.ckpt", distributed=comm)
    fit(model(), x, y, **settings(per_rank), checkpoint=out / "stopped.ckpt", max_steps=8,
        distributed=comm)
    if comm.rank == 0:
        shutil.copy(out / "stopped.ckpt", out / "stopped_copy.ckpt")
    comm.barrier()
    h2 = fit(model(), x, y, **settings(per_rank), checkpoint=out / "stopped.ckpt",
             resume=out / "stopped.ckpt", distributed=comm)
    bn = bn_model()
    fit(bn, x, y, **settings(per_rank), distributed=comm, sync_batch_norm=True)
    if comm.rank != 0:
        return
    bn_single = bn_model()
    fit(bn_single, x, y, **settings(GLOBAL_BATCH))
    single = model()
    hs = fit(single, x, y, **settings(GLOBAL_BATCH))
    full, _ = load_checkpoint(out / "full.ckpt")
    resumed, _ = load_checkpoint(out / "stopped.ckpt")
    _, stop_meta = load_checkpoint(out / "stopped_copy.ckpt")
    print(json.dumps({
        "world_size": comm.size,
        "vs_single": rel(m.state_dict(), single.state_dict()),
        "sync_bn_vs_single": rel(bn.state_dict(), bn_single.state_dict()),
        "history": h.epochs, "single_history": hs.epochs, "resumed_history": h2.epochs,
        "resume_bit_identical": sorted(full) == sorted(resumed) and all(
            np.array_equal(full[k], resumed[k]) for k in full),
        "stopped_meta": {k: stop_meta.get(k) for k in ("epoch", "batch", "samples",
                                                      "world_size")},
        "steps": int(full["step"])}))


if __name__ == "__main__":
    main()
