"""Sync batch norm without MPI: ranks simulated by threads that sum through a barrier.

Each thread runs the gradient graph of one rank's shard with a reducer bound that sums the
threads' arrays, so the ``all_reduce`` nodes (forward statistics and their backward) act as
over real ranks; the averaged gradients must equal plain batch norm's on the global batch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from lbdl_graph import ops
from lbdl_graph.backends import collectives
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.errors import InputError
from lbdl_graph.frontends import InputSpec, manual_seed, nn
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.passes.optim import SGD
from lbdl_graph.passes.train_step import make_split_train_step


class Threads:
    """``n`` simulated ranks: reducer(r) sums the arrays the n threads pass, in rank order."""

    def __init__(self, n: int) -> None:
        self.n, self.slots = n, [np.zeros(0)] * n
        self.barrier = threading.Barrier(n, timeout=30)

    def reducer(self, rank: int) -> collectives.Reducer:
        def reduce(x: np.ndarray, group: str) -> np.ndarray:
            assert group == "data"
            self.slots[rank] = x
            self.barrier.wait()
            total = np.sum(self.slots, axis=0)
            self.barrier.wait()
            return total
        return reduce

    def run(self, runners: list[Any], feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in range(self.n)]

        def one(r: int) -> None:
            with collectives.bind(self.reducer(r)):
                out[r] = runners[r].run(feeds[r])
        threads = [threading.Thread(target=one, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


def _model() -> Any:
    manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)
                         ).double()


def _runner(graph: Any, backend: str) -> Any:
    if backend == "numpy":
        return Interpreter(graph)
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx.segments import SegmentedOrtRunner

    return SegmentedOrtRunner(graph, intra_op_threads=1)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("ranks", [2, 4])
def test_threads_with_sync_bn_match_the_global_batch(backend: str, ranks: int) -> None:
    m = _model()
    specs, target = {"x": InputSpec(("N", 6), "f64")}, InputSpec(("N",), "i64")
    sync = make_split_train_step(trace_loss(m, specs, target, "cross_entropy", {},
                                            training=True, sync_batch_norm=True), SGD(0.1))
    plain = make_split_train_step(trace_loss(m, specs, target, "cross_entropy", {},
                                             training=True), SGD(0.1))
    assert sync.grad_graph.op_counts()["all_reduce"] == 2  # statistics, and their gradient
    assert "all_reduce" not in plain.grad_graph.op_counts()
    rng = np.random.default_rng(3)
    x, y = rng.normal(2.0, 3.0, (8, 6)), rng.integers(0, 4, 8)
    state = {s: sync.initial_state[s] for s in sync.grad_state}
    b = 8 // ranks
    feeds = [{"x": x[r * b:(r + 1) * b], "y": y[r * b:(r + 1) * b], **state}
             for r in range(ranks)]
    outs = Threads(ranks).run([_runner(sync.grad_graph, backend) for _ in range(ranks)], feeds)
    want = Interpreter(plain.grad_graph).run({"x": x, "y": y, **state})
    for name, w in want.items():
        if name.startswith("grad:"):
            got = np.mean([o[name] for o in outs], axis=0)
        elif name.endswith(":next"):  # running statistics: the same on every rank
            assert all(np.array_equal(o[name], outs[0][name]) for o in outs)
            got = outs[0][name]
        else:
            got = np.mean([o[name] for o in outs], axis=0)  # the loss
        np.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-12, err_msg=name)


def test_graph_is_cut_at_each_collective() -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx.segments import SegmentedOrtRunner, cut_at_collectives

    m = _model()
    g = trace_loss(m, {"x": InputSpec(("N", 6), "f64")}, InputSpec(("N",), "i64"),
                   "cross_entropy", {}, training=True, sync_batch_norm=True)
    step = make_split_train_step(g, SGD(0.1))
    segs = cut_at_collectives(step.grad_graph)
    assert [len(s.collectives) for s in segs] == [1, 1, 0]
    assert all(s.graph is not None and ops.all_reduce.name not in s.graph.op_counts()
               for s in segs)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(5, 6)), "y": rng.integers(0, 4, 5),
             **{s: step.initial_state[s] for s in step.grad_state}}
    got = SegmentedOrtRunner(step.grad_graph, intra_op_threads=1).run(feeds)  # a lone process
    want = Interpreter(step.grad_graph).run(feeds)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_sync_batch_norm_in_one_process_and_on_a_graph() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6)), rng.integers(0, 4, 16)
    a, b = _model(), _model()
    fit(a, x, y, optimizer=SGD(0.1), batch_size=8, sync_batch_norm=True, progress=False)
    fit(b, x, y, optimizer=SGD(0.1), batch_size=8, progress=False)
    for k, v in b.state_dict().items():  # one process: its batch is the global batch
        np.testing.assert_array_equal(a.state_dict()[k], v)
    from lbdl_graph.frontends.training.losses import loss_graphs

    with pytest.raises(InputError, match="sync_batch_norm needs a Module"):
        loss_graphs(_graph(), x, y, "cross_entropy", {}, sync_batch_norm=True)


def _graph() -> Any:
    from lbdl_graph.frontends import trace

    m = _model().eval()
    return trace(m, {"x": InputSpec(("N", 6), "f64")})
