"""How ``fit`` runs: in one process (:class:`LocalRun`) or data-parallel over MPI ranks
(:class:`DataParallelRun`). Both give ``fit`` the same hooks: compile, runner, start, batches,
evaluate, load, save, sync (``fit`` runs inside ``Communicator.guard``).

Data-parallel runs keep the ranks in lock-step: each trains on its shard
(:class:`~.sampler.DistributedSampler`), gradients are averaged between the gradient and the
update graph (:class:`~.data_parallel.DataParallelRunner`), validation is sharded and its sums
all-reduced, rank 0's batch-norm statistics are broadcast before every evaluation, checkpoint
and at the end, and only rank 0 writes checkpoints and shows progress. At start-up the ranks
compare digests of their initial state and of their settings (model graph, optimizer, batch
size, data shapes and a sample of the data); a mismatch raises on every rank.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.errors import InputError, LbdlError
from lbdl_graph.passes.train_step import make_split_train_step, params_to_inputs, rank_seed

from .checkpoint import load_checkpoint, save_checkpoint
from .data_parallel import BUCKET_BYTES, DataParallelRunner
from .distributed import Communicator, state_digest
from .runners import make_step_runner
from .sampler import DistributedSampler

__all__ = ["DataParallelRun", "LocalRun", "communicator", "data_digest", "make_run"]

_DATA_ROWS = 1024  # rows of the data hashed by the start-up check (evenly spaced)


def data_digest(data: Mapping[str, np.ndarray]) -> bytes:
    """A digest of the data's names, dtypes, shapes and up to 1024 evenly spaced rows."""
    h = hashlib.sha256()
    for k in sorted(data):
        a = np.asarray(data[k])
        rows = np.unique(np.linspace(0, len(a) - 1, min(len(a), _DATA_ROWS)).astype(np.int64))
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a[rows]).tobytes())
    return h.digest()


class LocalRun:
    """One process: the fused training step, every batch of the epoch's order."""

    rank, size, logs = 0, 1, True

    def __init__(self, total: int, batch_size: int, seed: int, shuffle: bool) -> None:
        self.batch_size = batch_size
        self.sampler = DistributedSampler(total, 0, 1, seed, shuffle)

    def compile(self, model: Any, xs: Any, y: Any, **kw: Any) -> tuple[Any, Any]:
        """The compiled training step and the eval graph."""
        from .trainer import compile_training

        kw.pop("sync_batch_norm", None)  # one process: its batch is the global batch
        return compile_training(model, xs, y, **kw)

    def runner(self, step: Any, backend: str) -> Any:
        """The step runner."""
        return make_step_runner(step, backend)

    def start(self, runner: Any, config: Mapping[str, Any], data: Mapping[str, np.ndarray]
              ) -> None:
        """Start-up checks (none in one process)."""

    def batches(self, epoch: int, start: int) -> list[np.ndarray]:
        """This process's batches of ``epoch`` from sample position ``start``."""
        return self.sampler.batches(epoch, self.batch_size, start)

    def consumed(self, start: int, steps: int) -> int:
        """The epoch's sample position after ``steps`` steps from ``start``."""
        return self.sampler.consumed(steps, self.batch_size, start)

    def evaluate(self, ev_runner: Any, val: Mapping[str, np.ndarray],
                 state: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Loss and metrics of the eval graph over ``val``."""
        from .trainer import evaluate

        return evaluate(ev_runner, val, state, self.batch_size)

    def load(self, path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A checkpoint's state and metadata."""
        return load_checkpoint(path)

    def save(self, path: str | Path, tensors: Mapping[str, np.ndarray],
             meta: Mapping[str, Any]) -> None:
        """Write a checkpoint (atomically)."""
        save_checkpoint(path, tensors, meta)

    def sync(self, runner: Any, what: str) -> None:
        """Make the state the same on every rank (nothing to do in one process)."""

    def bad_loss(self, runner: Any, step: Any, batch: Mapping[str, np.ndarray], loss: float,
                 epoch: int) -> LbdlError:
        """The error for a non-finite loss, naming the first node that produced it."""
        from .trainer import _first_bad_node

        return _first_bad_node(step, batch, runner.previous_state(), loss, epoch)


class DataParallelRun(LocalRun):
    """Rank ``comm.rank`` of ``comm.size``: see the module doc. ``batch_size`` is per rank."""

    def __init__(self, comm: Communicator, total: int, batch_size: int, seed: int,
                 shuffle: bool, *, drop_last: bool = False,
                 bucket_bytes: int = BUCKET_BYTES) -> None:
        self.comm = comm
        self.rank, self.size, self.logs = comm.rank, comm.size, comm.rank == 0
        self.batch_size = batch_size
        self.sampler = DistributedSampler(total, comm.rank, comm.size, seed, shuffle, drop_last)
        self.bucket_bytes = bucket_bytes
        self._graph_text = ""

    def compile(self, model: Any, xs: Any, y: Any, **kw: Any) -> tuple[Any, Any]:
        from .trainer import _metric_fns, loss_graphs

        mfns = _metric_fns(kw.get("metrics", ()))
        fwd, ev = loss_graphs(model, xs, y, kw.get("loss", "cross_entropy"), mfns,
                              kw.get("output"), bool(kw.get("sync_batch_norm")))
        self._graph_text = str(fwd)
        from lbdl_graph.passes.optim import Adam

        step = make_split_train_step(fwd, kw.get("optimizer") or Adam(),
                                     clip_grad_norm=kw.get("clip_grad_norm"),
                                     seed=rank_seed(kw.get("seed", 0), self.rank))
        ev = params_to_inputs(ev, [p.name for p in ev.params if p.name in step.info.state])
        return step, ev

    def runner(self, step: Any, backend: str) -> Any:
        return DataParallelRunner(step, self.comm, backend, bucket_bytes=self.bucket_bytes)

    def start(self, runner: Any, config: Mapping[str, Any], data: Mapping[str, np.ndarray]
              ) -> None:
        """Compare state, settings and data digests across the ranks; log the ranks."""
        settings = json.dumps({**config, "graph": self._graph_text}, sort_keys=True,
                              default=repr).encode()
        self.comm.check_same({"initial state (parameters)": state_digest(runner.state()),
                              "settings (model graph, optimizer, batch)":
                                  hashlib.sha256(settings).digest(),
                              "training data": data_digest(data)})
        where = self.comm.allgather_bytes(f"{socket.gethostname()}:{_pid()}".encode(), 64,
                                          "start-up exchange of process ids")
        if self.logs:
            ranks = ", ".join(f"{r}={w.rstrip(bytes(1)).decode()}" for r, w in enumerate(where))
            print(f"data parallel: {self.size} ranks (host:pid {ranks}), per-rank batch "
                  f"{self.batch_size}, global batch {self.batch_size * self.size}, "
                  f"{runner.bytes_per_step:,} bytes all-reduced per step, collective timeout "
                  f"{self.comm.timeout:g} s", file=sys.stderr, flush=True)

    def consumed(self, start: int, steps: int) -> int:
        return self.sampler.consumed(steps, self.batch_size, start)

    def evaluate(self, ev_runner: Any, val: Mapping[str, np.ndarray],
                 state: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Sharded evaluation: each rank takes every size-th sample, the sums are all-reduced."""
        n = len(next(iter(val.values())))
        mine = np.arange(self.rank, n, self.size)
        wanted = set(ev_runner.input_names)
        params = {k: v for k, v in state.items() if k in wanted}
        totals: dict[str, float] = {}
        for i in range(0, len(mine), self.batch_size):
            idx = mine[i:i + self.batch_size]
            out = ev_runner.run({**{k: v[idx] for k, v in val.items()}, **params})
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(idx)
        names = sorted(ev_runner.output_names)  # the same on every rank, even one without data
        buf = np.array([totals.get(k, 0.0) for k in names], np.float64)
        self.comm.allreduce_(buf, what="all-reduce of the validation sums")
        return {k: float(v) / n for k, v in zip(names, buf, strict=True)}

    def load(self, path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Rank 0 reads the checkpoint and broadcasts it (the ranks need no shared disk)."""
        state: dict[str, np.ndarray] | None = None
        meta: dict[str, Any] | None = None
        error: LbdlError | None = None
        if self.rank == 0:
            try:
                state, meta = load_checkpoint(path)
            except LbdlError as e:
                error = e
        self.comm.agree(error, f"loading checkpoint {path} (rank 0)")
        state = self.comm.broadcast_arrays(state, 0, "broadcast of the checkpoint")
        meta = self.comm.broadcast_json(meta, 0, "broadcast of the checkpoint metadata")
        return state, meta or {}

    def save(self, path: str | Path, tensors: Mapping[str, np.ndarray],
             meta: Mapping[str, Any]) -> None:
        """Rank 0 writes atomically; every rank raises if that failed."""
        self.comm.check_same({"parameters before the checkpoint": state_digest(
            {k: v for k, v in tensors.items() if not k.startswith("best/")})},
            "checkpoint consistency check")
        error: LbdlError | None = None
        if self.rank == 0:
            try:
                save_checkpoint(path, tensors, {**meta, "world_size": self.size})
            except LbdlError as e:
                error = e
        self.comm.agree(error, f"writing checkpoint {path} (rank 0)")

    def sync(self, runner: Any, what: str) -> None:
        """Rank 0's batch-norm statistics on every rank."""
        runner.sync_buffers(0)

    def bad_loss(self, runner: Any, step: Any, batch: Mapping[str, np.ndarray], loss: float,
                 epoch: int) -> LbdlError:
        return runner.first_bad_node(batch, loss, epoch)


def communicator(distributed: Any) -> Communicator | None:
    """The ranks of ``fit(distributed=...)``: None (False/None), COMM_WORLD (True) or the
    Communicator given."""
    if distributed is False or distributed is None:
        return None
    comm = Communicator.world() if distributed is True else distributed
    if not isinstance(comm, Communicator):
        raise InputError(f"distributed must be True, False or a Communicator, got "
                         f"{type(distributed).__name__}")
    return comm


def make_run(comm: Communicator | None, total: int, batch_size: int, seed: int, shuffle: bool,
             drop_last: bool) -> LocalRun:
    """One process (comm None) or data parallel over ``comm``."""
    if comm is None:
        return LocalRun(total, batch_size, seed, shuffle)
    return DataParallelRun(comm, total, batch_size, seed, shuffle, drop_last=drop_last)


def _pid() -> int:
    import os

    return os.getpid()
