"""Run under ``mpiexec -n N``: ``fit(distributed=True)`` with a fault injected on rank 1.

Modes: ``ok`` (no fault), ``raise`` (rank 1 raises at step 3), ``hang`` (rank 1 sleeps at
step 3), ``die`` (rank 1 kills itself with SIGKILL at step 3), ``mismatch`` (rank 1 starts
from other weights, rank 2 uses another learning rate).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np

from lbdl_graph.errors import DistributedError
from lbdl_graph.frontends import manual_seed, nn
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.training.data_parallel import DataParallelRunner
from lbdl_graph.frontends.training.distributed import Communicator
from lbdl_graph.passes.optim import SGD


def main() -> None:
    mode = sys.argv[1]
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
    y = rng.integers(0, 3, 64)
    lr = 0.2 if mode == "mismatch" and comm.rank == 2 else 0.1
    try:
        h = fit(model, x, y, optimizer=SGD(lr), epochs=2, batch_size=8, distributed=comm)
    except DistributedError as e:
        print(json.dumps({"rank": comm.rank, "error": str(e), "ranks": list(e.ranks),
                          "collective": e.collective}), flush=True)
        sys.exit(3)
    print(json.dumps({"rank": comm.rank, "loss": h["loss"][-1]}), flush=True)


if __name__ == "__main__":
    main()
