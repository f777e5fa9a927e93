"""The data-parallel training step: gradient graph, bucketed all-reduce, update graph.

Every rank runs the gradient graph on its shard of the batch, copies the gradients into flat
float32 buckets (in reverse parameter order: the last layers' gradients come first), sums each
bucket over the ranks in place (``Iallreduce`` with ``MPI_IN_PLACE``, started as soon as the
bucket is filled), divides by the world size and feeds views of the buckets to the update graph.
The update graph (clipping, optimizer) then computes the same new state on every rank. The loss
and metrics ride in the last bucket, so the figures every rank reports are the global averages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lbdl_graph.backends import collectives
from lbdl_graph.errors import DistributedError, InputError, NumericError
from lbdl_graph.graph import Graph
from lbdl_graph.opdef import Trait
from lbdl_graph.passes.train_step import SplitTrainStep

from .distributed import Communicator
from .runners import _check

__all__ = ["BUCKET_BYTES", "Buckets", "DataParallelRunner"]

BUCKET_BYTES = 4 << 20  # 4 MiB: few collectives for small models, overlap for large ones
POLL_EVERY = 16  # nodes between MPI progress polls while buckets are in flight (overlap)


class Buckets:
    """Flat contiguous buffers, one dtype each, holding named tensors as reshaped views.

    ``entries`` are (name, shape, dtype) in the order they are filled; a new bucket starts when
    the next tensor would take the current one past ``bucket_bytes`` (a tensor larger than that
    gets a bucket of its own) or changes the dtype.
    """

    def __init__(self, entries: Sequence[tuple[str, tuple[int, ...], Any]],
                 bucket_bytes: int = BUCKET_BYTES) -> None:
        if bucket_bytes < 1:
            raise InputError(f"bucket size must be >= 1 byte, got {bucket_bytes}")
        groups: list[list[tuple[str, tuple[int, ...], np.dtype[Any]]]] = []
        size = 0
        for name, shape, dt in entries:
            dt = np.dtype(dt)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            if not groups or groups[-1][0][2] != dt or size + nbytes > bucket_bytes:
                groups.append([])
                size = 0
            groups[-1].append((name, tuple(shape), dt))
            size += nbytes
        self.buffers: list[np.ndarray] = []
        self.views: dict[str, np.ndarray] = {}
        self.members: list[list[str]] = []
        for group in groups:
            counts = [int(np.prod(s, dtype=np.int64)) for _, s, _ in group]
            buf = np.zeros(sum(counts), group[0][2])
            offset = 0
            for (name, shape, _), n in zip(group, counts, strict=True):
                self.views[name] = buf[offset:offset + n].reshape(shape)
                offset += n
            self.buffers.append(buf)
            self.members.append([name for name, _, _ in group])

    @property
    def nbytes(self) -> int:
        """Bytes summed over the ranks each step."""
        return sum(b.nbytes for b in self.buffers)


class DataParallelRunner:
    """Runs a :class:`SplitTrainStep` on one rank; same interface as the single-process runners
    (``step(batch)``, ``state()``, ``set_state()``, ``previous_state()``).

    Args:
        step: the split step (gradient graph and update graph).
        comm: the ranks to average over.
        backend: "numpy" or "onnxruntime" (both graphs run there).
        bucket_bytes: the size of one all-reduce bucket.
        overlap: start each bucket's all-reduce as soon as the backward pass has produced its
            gradients, and poll MPI while the rest of the backward runs (NumPy backend only:
            ONNX Runtime hands the gradients back when the whole graph has run).
        **options: passed to the Interpreter or OrtRunner of both graphs.
    """

    def __init__(self, step: SplitTrainStep, comm: Communicator, backend: str = "numpy", *,
                 bucket_bytes: int = BUCKET_BYTES, overlap: bool = False,
                 **options: Any) -> None:
        _check(backend)
        if overlap and backend != "numpy":
            raise InputError("overlap=True needs the numpy backend (ONNX Runtime returns the "
                             "gradients only after the whole gradient graph has run)")
        self.overlap = overlap
        self.sync_batch_norm = any(n.op.has(Trait.COLLECTIVE) for n in step.grad_graph.nodes)
        self.split = step
        self.comm = comm
        self.backend = backend
        info = step.info
        self._grad = _graph_runner(step.grad_graph, backend, options)
        self._update = _graph_runner(step.update_graph, backend, options)
        self._grad_state = step.grad_state
        self._update_state = step.update_state
        outs = set(step.grad_graph.output_names())
        self._buffers = [s for s in info.state if s not in self._update_state
                         and f"{s}:next" in outs]
        self._reported = [info.loss, *(m for m in info.metrics if m in outs)]
        types = {v.name: v.type for v in step.update_graph.inputs}
        entries = [(f"grad:{p}", tuple(int(d) for d in types[p].shape),
                    types[p].dtype.numpy) for p in reversed(info.params)]
        scalars: list[tuple[str, tuple[int, ...], Any]] = [
            (f"avg:{k}", (), np.float32) for k in self._reported]
        if entries and np.dtype(entries[-1][2]) != np.float32:
            scalars = [(n, s, entries[-1][2]) for n, s, _ in scalars]
        self.buckets = Buckets([*entries, *scalars], bucket_bytes)
        self._roots = _roots(step.grad_graph) if overlap else {}
        self._state = {s: np.array(step.initial_state[s], copy=True) for s in info.state}
        self._previous = dict(self._state)
        self.last_batch: dict[str, np.ndarray] | None = None

    @property
    def bytes_per_step(self) -> int:
        """Bytes each rank contributes to the all-reduce per step."""
        return self.buckets.nbytes

    def step(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One data-parallel step on this rank's ``batch``; returns the averaged loss/metrics
        plus ``lr`` (and ``grad_norm`` with clipping)."""
        st = self._state
        feeds = {**batch, **{s: st[s] for s in self._grad_state}}
        views = self.buckets.views
        what = f"gradient all-reduce of step {int(st['step'])}"
        pending: list[Any] = []
        with collectives.bind(self._reduce):  # the gradient graph's all_reduce nodes (sync BN)
            g = self._overlapped(feeds, what, pending) if self.overlap else self._grad.run(feeds)
        if not self.overlap:
            for buf, names in zip(self.buckets.buffers, self.buckets.members, strict=True):
                for name in names:
                    np.copyto(views[name], g[_source(name)], casting="same_kind")
                pending.append((self.comm.iallreduce_(buf, what=what), buf))
        for req, buf in pending:
            self.comm.finish(req, buf, average=True)
        u = self._update.run({**{s: st[s] for s in self._update_state},
                              **{f"grad:{p}": views[f"grad:{p}"] for p in self.split.info.params}})
        self._previous = dict(st)
        for s in self._update_state:
            st[s] = u.pop(f"{s}:next")
        for s in self._buffers:
            st[s] = g[f"{s}:next"]
        out = {k: np.array(views[f"avg:{k}"], dtype=np.asarray(g[k]).dtype)
               for k in self._reported}
        out.update(u)
        return out

    def _reduce(self, x: np.ndarray, group: str) -> np.ndarray:
        """The reducer of the gradient graph's collectives: a sum over this runner's ranks."""
        if group != "data":
            raise DistributedError(f"all_reduce over group '{group}': a data-parallel run has "
                                   "only the group 'data'")
        buf = np.ascontiguousarray(x)
        return self.comm.allreduce_(buf, what=f"all_reduce {list(buf.shape)} in the gradient "
                                    "graph (sync batch norm)")

    def _overlapped(self, feeds: dict[str, Any], what: str, pending: list[Any]
                    ) -> dict[str, np.ndarray]:
        """Run the gradient graph, starting each bucket's all-reduce once it is filled."""
        views = self.buckets.views
        left = [len(m) for m in self.buckets.members]
        where = {n: i for i, m in enumerate(self.buckets.members) for n in m}
        started: list[Any] = []
        counter = [0]

        def filled(name: str) -> Any:
            def copy(arr: Any) -> None:
                np.copyto(views[name], arr, casting="same_kind")
                i = where[name]
                left[i] -= 1
                if left[i] == 0:
                    buf = self.buckets.buffers[i]
                    started.append(self.comm.iallreduce_(buf, what=what))
                    pending.append((started[-1], buf))
            return copy

        def poll() -> None:
            counter[0] += 1
            if started and counter[0] % POLL_EVERY == 0:
                for p in started:
                    p.req.Test()  # MPI moves data only when called

        hooks: dict[str, list[Any]] = {}
        for name in where:
            hooks.setdefault(self._roots[_source(name)], []).append(filled(name))
        g = self._grad.run_hooked(feeds, {r: _chain(fs) for r, fs in hooks.items()}, poll)
        for i, names in enumerate(self.buckets.members):
            if left[i]:  # a value no node produces (a graph input passed through)
                for name in names:
                    np.copyto(views[name], g[_source(name)], casting="same_kind")
                pending.append((self.comm.iallreduce_(self.buckets.buffers[i], what=what),
                                self.buckets.buffers[i]))
        return g

    def state(self) -> dict[str, np.ndarray]:
        """The current state (host arrays, the same on every rank but the buffers)."""
        return dict(self._state)

    def previous_state(self) -> dict[str, np.ndarray]:
        """The state before the last step."""
        return dict(self._previous)

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state (e.g. from a checkpoint); names, shapes and dtypes must match."""
        for s, old in self._state.items():
            if s not in state:
                raise InputError(f"state '{s}' missing from the loaded state")
            new = np.asarray(state[s])
            if new.shape != old.shape or new.dtype != old.dtype:
                raise InputError(f"state '{s}' is {new.dtype}{list(new.shape)}, expected "
                                 f"{old.dtype}{list(old.shape)}")
        self._state = {s: np.array(state[s], copy=True) for s in self._state}

    def sync_buffers(self, root: int = 0) -> None:
        """Give every rank root's buffers (batch-norm running statistics)."""
        if self._buffers and self.comm.size > 1:
            got = self.comm.broadcast_arrays({s: self._state[s] for s in self._buffers}, root,
                                             "broadcast of the batch-norm statistics")
            self._state.update(got)

    def first_bad_node(self, batch: Mapping[str, np.ndarray], loss: float, epoch: int
                       ) -> NumericError:
        """Replay this rank's last step on NumPy with NaN/Inf checks; names the first bad node."""
        from lbdl_graph.backends.numpy import Interpreter

        msg = f"loss became {loss} at epoch {epoch + 1} (rank {self.comm.rank})"
        prev = self._previous
        try:
            g = Interpreter(self.split.grad_graph, check_numerics=True).run(
                {**batch, **{s: prev[s] for s in self._grad_state}})
            Interpreter(self.split.update_graph, check_numerics=True).run(
                {**{s: prev[s] for s in self._update_state},
                 **{k: v for k, v in g.items() if k.startswith("grad:")}})
        except NumericError as e:
            return NumericError(f"{msg}: {e.message}", node=e.node, op=e.op, source=e.source)
        return NumericError(f"{msg}; this rank's NumPy replay stayed finite (another rank's "
                            "gradients were not)")


class _NumpyGraph:
    def __init__(self, graph: Graph, options: Mapping[str, Any]) -> None:
        from lbdl_graph.backends.numpy import Interpreter

        self._interp = Interpreter(graph, **options)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._interp.run(feeds)

    def run_hooked(self, feeds: Mapping[str, Any], on_value: Mapping[str, Any], poll: Any
                   ) -> dict[str, np.ndarray]:
        return self._interp.run(feeds, on_value=on_value, poll=poll)


def _source(bucket_entry: str) -> str:
    """The gradient-graph output a bucket entry is copied from (``avg:loss`` -> ``loss``)."""
    return bucket_entry[4:] if bucket_entry.startswith("avg:") else bucket_entry


def _chain(fns: Sequence[Any]) -> Any:
    def call(arr: Any) -> None:
        for f in fns:
            f(arr)
    return call


def _roots(graph: Graph) -> dict[str, str]:
    """Output name -> the value it is an identity of (outputs get identity nodes at the end
    of the graph; the value they copy is ready much earlier in the backward pass)."""
    from lbdl_graph import ops

    made = {v: n for n in graph.nodes for v in n.outputs}
    out: dict[str, str] = {}
    for v in graph.outputs:
        root = v
        while root in made and made[root].op is ops.identity and made[root].inputs[0] is not None:
            root = made[root].inputs[0]  # type: ignore[assignment]
        out[v.name] = root.name
    return out


def _graph_runner(graph: Graph, backend: str, options: Mapping[str, Any]) -> Any:
    """Something with ``run(feeds) -> outputs`` for ``graph`` on ``backend``."""
    if backend == "numpy":
        return _NumpyGraph(graph, options)
    from lbdl_graph.backends.onnx.runner import OrtRunner
    from lbdl_graph.backends.onnx.segments import SegmentedOrtRunner, has_collectives

    if has_collectives(graph):  # one session per segment, the all-reduces between them
        return SegmentedOrtRunner(graph, **options)
    return OrtRunner(graph, **options)
