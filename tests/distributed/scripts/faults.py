"""Run under ``mpiexec -n N``: ``fit(distributed=True)`` with a fault injected on rank 1.

``faults.py MODE DIR``: each rank that finishes writes ``DIR/rank<r>.json`` (its final loss, or
the DistributedError it raised); the launcher may interleave the ranks' stdout.

Modes: ``ok`` (no fault), ``raise`` (rank 1 raises at step 3), ``hang`` (rank 1 sleeps at
step 3), ``die`` (rank 1 kills itself with SIGKILL at step 3), ``mismatch`` (rank 1 starts
from other weights, rank 2 uses another learning rate), ``badinput`` (rank 1 passes targets of
another length, an error fit raises before any collective).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.errors import DistributedError
from lbdl_graph.frontends import manual_seed, nn
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.training.data_parallel import DataParallelRunner
from lbdl_graph.frontends.training.distributed import Communicator
from lbdl_graph.passes.optim import SGD


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    comm = Communicator.world(timeout=float(os.environ.get("FAULT_TIMEOUT", "30")))
    faulty = comm.rank == 1
    original = DataParallelRunner.step

    def step(self: DataParallelRunner, batch: Any) -> Any:
        if faulty and int(self.state()["step"]) == 3:
            if mode == "raise":
                raise ValueError("injected failure")
            if mode == "hang":
                time.sleep(600)
            if mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, batch)

    DataParallelRunner.step = step  # type: ignore[method-assign]
    manual_seed(1 if mode == "mismatch" and faulty else 0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype(np.float32)
    y = rng.integers(0, 3, 65 if mode == "badinput" and faulty else 64)
    lr = 0.2 if mode == "mismatch" and comm.rank == 2 else 0.1
    try:
        h = fit(model, x, y, optimizer=SGD(lr), epochs=2, batch_size=8, distributed=comm)
    except DistributedError as e:
        (out / f"rank{comm.rank}.json").write_text(json.dumps(
            {"rank": comm.rank, "error": str(e), "ranks": list(e.ranks),
             "collective": e.collective}))
        sys.exit(3)
    (out / f"rank{comm.rank}.json").write_text(json.dumps({"rank": comm.rank,
                                                           "loss": h["loss"][-1]}))


if __name__ == "__main__":
    main()
