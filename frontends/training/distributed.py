"""MPI for data-parallel training (mpi4py): ranks, timed collectives, start-up checks, faults.

:class:`Communicator` wraps an mpi4py communicator. Every collective is nonblocking
(``Iallreduce``, ``Ibcast``, ``Iallgather``) and waited on with a deadline, so a rank that stops
answering (hung, killed, or slower than the timeout) never makes the others hang: the waiting
rank asks its peers which of them are still waiting, raises a :class:`DistributedError` that names
the ranks that did not arrive, and :meth:`Communicator.guard` aborts the job (``MPI_Abort``).
A rank that raises inside ``guard`` prints its error with its rank and aborts the job too.
Errors every rank sees alike (different models, a bad checkpoint) are agreed on collectively and
raised on every rank without an abort. No pickle: buffers go through numpy arrays, metadata
through JSON bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from lbdl_graph.errors import DistributedError, LbdlError

__all__ = ["DEFAULT_TIMEOUT", "Communicator", "mpi_available", "state_digest"]

DEFAULT_TIMEOUT = 300.0  # seconds; LBDL_GRAPH_DIST_TIMEOUT overrides it
_PROBE, _ANSWER = 7101, 7102  # point-to-point tags of the "who is still waiting" exchange
_GRACE = 2.0  # seconds (at most the timeout) the timed-out rank waits for its peers' answers
_NAP_AFTER = 1.0  # seconds of waiting after which polls are 1 ms apart
_FLUSH = 0.5  # seconds between printing a rank's fatal error and MPI_Abort
_MSG = 480  # bytes of an error message exchanged by agree()


def mpi_available() -> bool:
    """Whether mpi4py (and an MPI library under it) can be imported."""
    try:
        from mpi4py import MPI  # noqa: F401
    except ImportError:
        return False
    return True


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"distributed training needs mpi4py and an MPI library ({e})",
                               hint="pip install -e '.[distributed]' (mpi4py + the mpich wheel) "
                                    "and start the ranks with mpiexec -n N") from None
    return MPI


def state_digest(arrays: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 over names, dtypes, shapes and bytes (name order): equal state, equal digest."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.digest()


class Communicator:
    """A data-parallel group of ranks over an mpi4py communicator (default ``COMM_WORLD``).

    ``timeout`` (seconds) bounds every collective; ``stats`` accumulates the all-reduce calls,
    bytes, seconds from start to completion (including the wait for the slowest rank) and
    seconds spent waiting in :meth:`finish` (what an all-reduce started early still costs).
    """

    def __init__(self, comm: Any = None, *, timeout: float | None = None) -> None:
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        env = os.environ.get("LBDL_GRAPH_DIST_TIMEOUT")
        self.timeout = float(timeout if timeout is not None else env or DEFAULT_TIMEOUT)
        if not self.timeout > 0:
            raise DistributedError(f"the collective timeout must be > 0 seconds, got "
                                   f"{self.timeout}")
        self.stats = {"allreduce_calls": 0, "allreduce_bytes": 0, "allreduce_seconds": 0.0,
                      "allreduce_wait_seconds": 0.0}
        self._seq = 0  # collectives started so far (equal on every rank when all is well)

    @classmethod
    def world(cls, timeout: float | None = None) -> Communicator:
        """The ranks started together by mpiexec."""
        return cls(None, timeout=timeout)

    @classmethod
    def single(cls, timeout: float | None = None) -> Communicator:
        """This process alone (``COMM_SELF``): world size 1."""
        return cls(_mpi().COMM_SELF, timeout=timeout)

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, timeout={self.timeout:g})"

    # ---------------------------------------------------------------- waiting with a deadline

    def wait(self, req: Any, what: str) -> None:
        """Wait for ``req`` until the timeout; then raise naming the ranks that did not arrive."""
        if req.Test():
            return
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        probe_at = t0
        while not req.Test():
            now = time.monotonic()
            if now > deadline:
                missing = self._who_is_missing()
                raise DistributedError(
                    f"rank {self.rank} of {self.size}: {what} did not complete within "
                    f"{self.timeout:g} s; rank(s) {', '.join(map(str, missing)) or '?'} did not "
                    "reach it (hung, dead or too slow)", ranks=tuple(missing),
                    hint="raise the timeout with LBDL_GRAPH_DIST_TIMEOUT=SECONDS if a step "
                         "really takes that long")
            if now >= probe_at:
                self._answer_probes()
                probe_at = now + 1e-3
            # MPI moves large buffers only while the ranks call into it, so poll, yielding the
            # core between polls (ranks, or other programs, may outnumber the cores); a rank
            # that waited a second for a slower one naps 1 ms between polls
            time.sleep(1e-3 if now - t0 > _NAP_AFTER else 0)

    def _answer_probes(self) -> None:
        """Tell a timed-out peer that this rank is waiting too (called while waiting)."""
        MPI = self.MPI
        status = MPI.Status()
        while self.comm.Iprobe(MPI.ANY_SOURCE, _PROBE, status):
            buf = np.empty(1, np.int64)
            self.comm.Recv([buf, MPI.INT64_T], status.Get_source(), _PROBE)
            self.comm.Send([np.array([self._seq], np.int64), MPI.INT64_T], status.Get_source(),
                           _ANSWER)

    def _who_is_missing(self) -> list[int]:
        """Ask every peer whether it waits in the same collective; the silent ones are missing."""
        MPI = self.MPI
        peers = [r for r in range(self.size) if r != self.rank]
        msg = np.array([self._seq], np.int64)
        sends = [self.comm.Isend([msg, MPI.INT64_T], r, _PROBE) for r in peers]
        waiting: set[int] = set()
        deadline = time.monotonic() + min(_GRACE, self.timeout)
        status = MPI.Status()
        while time.monotonic() < deadline and len(waiting) < len(peers):
            self._answer_probes()  # peers that timed out too ask us at the same time
            if self.comm.Iprobe(MPI.ANY_SOURCE, _ANSWER, status):
                buf = np.empty(1, np.int64)
                src = status.Get_source()
                self.comm.Recv([buf, MPI.INT64_T], src, _ANSWER)
                if int(buf[0]) == self._seq:
                    waiting.add(src)
            else:
                time.sleep(1e-3)
        for s in sends:
            with contextlib.suppress(Exception):
                s.Cancel()
        return [r for r in peers if r not in waiting]

    # ---------------------------------------------------------------- collectives

    def allreduce_(self, buf: np.ndarray, *, average: bool = False, what: str = "all-reduce"
                   ) -> np.ndarray:
        """Sum (or average) a contiguous numpy buffer over the ranks, in place; returns it."""
        req = self.iallreduce_(buf, what=what)
        self.finish(req, buf, average=average)
        return buf

    def iallreduce_(self, buf: np.ndarray, *, what: str = "all-reduce") -> _Pending:
        """Start an in-place sum of ``buf`` over the ranks; :meth:`finish` completes it."""
        if not buf.flags.c_contiguous:
            raise DistributedError("all-reduce needs a C-contiguous buffer")
        self._seq += 1
        t0 = time.perf_counter()
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return _Pending(req, what, t0, buf.nbytes)

    def finish(self, pending: _Pending, buf: np.ndarray, *, average: bool = False) -> None:
        """Wait for a started all-reduce (see :meth:`wait`), then divide by the size if asked."""
        t0 = time.perf_counter()
        self.wait(pending.req, pending.what)
        self.stats["allreduce_wait_seconds"] += time.perf_counter() - t0
        self.stats["allreduce_calls"] += 1
        self.stats["allreduce_bytes"] += pending.nbytes
        self.stats["allreduce_seconds"] += time.perf_counter() - pending.t0
        if average and self.size > 1:
            np.multiply(buf, buf.dtype.type(1.0 / self.size), out=buf)

    def broadcast_(self, buf: np.ndarray, root: int = 0, what: str = "broadcast") -> np.ndarray:
        """Overwrite ``buf`` on every rank with root's ``buf`` (in place); returns it."""
        if not buf.flags.c_contiguous:
            raise DistributedError("broadcast needs a C-contiguous buffer")
        self._seq += 1
        self.wait(self.comm.Ibcast(buf, root=root), what)
        return buf

    def broadcast_json(self, obj: Any, root: int = 0, what: str = "broadcast") -> Any:
        """Root's JSON-serialisable ``obj`` on every rank (others pass anything, e.g. None)."""
        data = json.dumps(obj).encode() if self.rank == root else b""
        n = self.broadcast_(np.array([len(data)], np.int64), root, what)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else \
            np.empty(int(n[0]), np.uint8)
        self.broadcast_(buf, root, what)
        return json.loads(buf.tobytes().decode())

    def broadcast_arrays(self, arrays: Mapping[str, np.ndarray] | None, root: int = 0,
                         what: str = "broadcast of the state") -> dict[str, np.ndarray]:
        """Root's named arrays on every rank (names, dtypes and shapes travel as JSON)."""
        spec = [[k, np.asarray(v).dtype.str, list(np.shape(v))] for k, v in (arrays or {}).items()]
        spec = self.broadcast_json(spec if self.rank == root else None, root, what)
        out: dict[str, np.ndarray] = {}
        for name, dt, shape in spec:
            if self.rank == root and arrays is not None:
                a = np.array(arrays[name], order="C", copy=True)
            else:
                a = np.empty(shape, np.dtype(dt))
            out[name] = self.broadcast_(a.reshape(-1).view(np.uint8), root, what
                                        ).view(np.dtype(dt)).reshape(shape)
        return out

    def allgather_bytes(self, data: bytes, width: int, what: str = "all-gather") -> list[bytes]:
        """Every rank's ``data`` (at most ``width`` bytes, zero-padded) on every rank."""
        send = np.zeros(width, np.uint8)
        raw = np.frombuffer(data[:width], np.uint8)
        send[:len(raw)] = raw
        recv = np.zeros(width * self.size, np.uint8)
        self._seq += 1
        self.wait(self.comm.Iallgather(send, recv), what)
        return [recv[i * width:(i + 1) * width].tobytes() for i in range(self.size)]

    def barrier(self, what: str = "barrier") -> None:
        """Wait (with the timeout) until every rank is here."""
        self._seq += 1
        self.wait(self.comm.Ibarrier(), what)

    # ---------------------------------------------------------------- agreement

    def agree(self, error: BaseException | str | None, what: str) -> None:
        """Raise on every rank if ``error`` is set on any rank; the message names those ranks."""
        msg = "" if error is None else str(error)
        flags = self.allgather_bytes((b"E" + msg.encode()) if error is not None else b"-",
                                     _MSG, what)
        bad = [r for r, f in enumerate(flags) if f[:1] == b"E"]
        if bad:
            first = flags[bad[0]][1:].rstrip(b"\0").decode(errors="replace")
            raise DistributedError(f"{what} failed on rank(s) {', '.join(map(str, bad))}: "
                                   f"{first}", ranks=tuple(bad), collective=True)

    def check_same(self, digests: Mapping[str, bytes], what: str = "start-up check") -> None:
        """Raise on every rank unless each named digest (32 bytes) is equal on all ranks."""
        names = sorted(digests)
        mine = b"".join(digests[n][:32].ljust(32, b"\0") for n in names)
        every = self.allgather_bytes(mine, 32 * len(names), what)
        problems: list[str] = []
        ranks: set[int] = set()
        for i, n in enumerate(names):
            ref = every[0][32 * i:32 * (i + 1)]
            odd = [r for r in range(self.size) if every[r][32 * i:32 * (i + 1)] != ref]
            if odd:
                ranks.update(odd)
                problems.append(f"{n} differs on rank(s) {', '.join(map(str, odd))} "
                                f"(rank 0: {ref.hex()[:12]}, rank {odd[0]}: "
                                f"{every[odd[0]][32 * i:32 * (i + 1)].hex()[:12]})")
        if problems:
            raise DistributedError(f"{what}: the ranks do not run the same training: "
                                   + "; ".join(problems), ranks=tuple(sorted(ranks)),
                                   collective=True,
                                   hint="every rank must build the same model with the same "
                                        "seed, optimizer and settings")

    # ---------------------------------------------------------------- faults

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Abort every rank (``MPI_Abort``) when this one raises, after printing the error with
        its rank; errors all ranks raised alike (``collective``) just propagate."""
        try:
            yield
        except BaseException as e:
            if self.size == 1 or (isinstance(e, DistributedError) and e.collective):
                raise
            if isinstance(e, KeyboardInterrupt | SystemExit) and not isinstance(e, LbdlError):
                what = type(e).__name__
            else:
                what = str(e) if isinstance(e, LbdlError) else f"{type(e).__name__}: {e}"
            print(f"lbdl-graph: rank {self.rank} of {self.size} failed: {what}\n"
                  f"lbdl-graph: aborting all {self.size} ranks", file=sys.stderr, flush=True)
            time.sleep(_FLUSH)  # the launcher forwards the message before it tears the job down
            self.abort(1)
            raise

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (the launcher kills the processes)."""
        self.comm.Abort(code)


class _Pending:
    """A started all-reduce: its request and what it is, for the timeout message."""

    __slots__ = ("nbytes", "req", "t0", "what")

    def __init__(self, req: Any, what: str, t0: float, nbytes: int) -> None:
        self.req, self.what, self.t0, self.nbytes = req, what, t0, nbytes
