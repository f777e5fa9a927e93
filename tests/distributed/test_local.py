"""Data-parallel pieces that need no second process: sampler, buckets, the split step,
rank-keyed dropout and the runner at world size 1."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.errors import InputError
from lbdl_graph.frontends import InputSpec, manual_seed, nn
from lbdl_graph.frontends.training.data_parallel import Buckets, DataParallelRunner
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.training.sampler import DistributedSampler
from lbdl_graph.frontends.training.trainer import trace_loss
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import make_split_train_step, make_train_step, rank_seed

from .helpers import require_mpi


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_together_hold_each_global_batch(world: int) -> None:
    n, b = 48, 4
    shards = [DistributedSampler(n, r, world, seed=5).batches(2, b) for r in range(world)]
    single = DistributedSampler(n, 0, 1, seed=5).batches(2, b * world)
    assert all(len(s) == len(single) for s in shards)
    for k, whole in enumerate(single):
        assert sorted(np.concatenate([s[k] for s in shards])) == sorted(whole)
    again = DistributedSampler(n, 0, world, seed=5).batches(2, b)  # same seed: same order
    assert all(np.array_equal(u, v) for u, v in zip(again, shards[0], strict=True))
    other = DistributedSampler(n, 0, world, seed=5).batches(3, b)  # new epoch: new order
    assert not all(np.array_equal(u, v) for u, v in zip(other, shards[0], strict=True))


def test_last_batch_padded_or_dropped() -> None:
    n, world, b = 10, 4, 2
    padded = [DistributedSampler(n, r, world, shuffle=False).indices(0, b) for r in range(world)]
    assert [len(p) for p in padded] == [3, 3, 3, 3]  # 10 -> 12 with samples 0 and 1 again
    assert sorted(np.concatenate(padded)) == [0, 0, 1, 1, *range(2, 10)]
    dropped = [DistributedSampler(n, r, world, shuffle=False, drop_last=True).indices(0, b)
               for r in range(world)]
    assert [len(d) for d in dropped] == [2, 2, 2, 2]  # one full global batch of 8
    assert sorted(np.concatenate(dropped)) == list(range(8))


def test_start_skips_the_samples_already_trained_on() -> None:
    s = DistributedSampler(40, 1, 2, seed=3)
    order = s.order(0)
    assert np.array_equal(s.indices(0, 4, start=16), order[17::2])
    assert s.consumed(2, 4, start=8) == 24
    with pytest.raises(InputError, match="rank 2 is not in a world of 2"):
        DistributedSampler(40, 2, 2)
    with pytest.raises(InputError, match="3 samples cannot be shared by 4 ranks"):
        DistributedSampler(3, 0, 4)


def test_buckets_are_flat_views_split_by_size_and_dtype() -> None:
    entries = [("a", (3, 4), np.float32), ("b", (5,), np.float32), ("c", (100,), np.float32),
               ("d", (2,), np.float64)]
    bk = Buckets(entries, bucket_bytes=80)
    assert bk.members == [["a", "b"], ["c"], ["d"]]
    assert [b.dtype for b in bk.buffers] == [np.float32, np.float32, np.float64]
    bk.views["b"][:] = 7
    assert bk.buffers[0][12:].tolist() == [7] * 5  # a view, not a copy
    assert bk.nbytes == 4 * (12 + 5 + 100) + 8 * 2


def _lenet_step() -> tuple[object, dict[str, np.ndarray]]:
    manual_seed(0)
    # no conv bias: batch norm cancels it, so its gradient is rounding noise (~1e-7) that
    # Adam scales up to steps of size lr, and two correct gradient graphs then diverge
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Dropout(0.3), nn.Flatten(), nn.Linear(144, 3))
    fwd = trace_loss(model, {"x": InputSpec(("N", 1, 8, 8))}, InputSpec(("N",), "i64"),
                     "cross_entropy", {}, training=True)
    rng = np.random.default_rng(0)
    batch = {"x": rng.random((6, 1, 8, 8)).astype(np.float32), "y": rng.integers(0, 3, 6)}
    return fwd, batch


def test_split_step_state_matches_the_fused_step() -> None:
    fwd, _ = _lenet_step()
    fused = make_train_step(fwd, Adam(), clip_grad_norm=1.0)  # type: ignore[arg-type]
    split = make_split_train_step(fwd, Adam(), clip_grad_norm=1.0)  # type: ignore[arg-type]
    assert split.info == fused.info
    assert set(split.grad_graph.output_names()) == {
        "loss", *(f"grad:{p}" for p in split.info.params),
        "1.running_mean:next", "1.running_var:next", "1.num_batches_tracked:next"}
    assert "grad_norm" in split.update_graph.output_names()
    assert "step" in split.grad_state and "opt.m/0.weight" not in split.grad_state


def test_dropout_masks_are_keyed_by_rank_and_reproducible() -> None:
    fwd, batch = _lenet_step()
    seeds = {rank_seed(0, r) for r in range(64)}
    assert len(seeds) == 64 and rank_seed(7, 0) == 7 and max(seeds) < 2**31
    grads = []
    for r in (0, 1, 0):
        split = make_split_train_step(fwd, Adam(), seed=rank_seed(0, r))  # type: ignore[arg-type]
        st = split.initial_state
        out = Interpreter(split.grad_graph).run({**batch, **{s: st[s] for s in split.grad_state}})
        grads.append(out["grad:5.weight"])
    assert np.array_equal(grads[0], grads[2])  # rank 0 again: the same masks
    assert not np.allclose(grads[0], grads[1])  # rank 1: other masks


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_runner_at_world_size_one_is_the_fused_step(backend: str) -> None:
    require_mpi()
    from lbdl_graph.frontends.training.distributed import Communicator

    fwd, batch = _lenet_step()
    fused = make_step_runner(make_train_step(fwd, Adam(), clip_grad_norm=1.0), backend)
    dp = DataParallelRunner(make_split_train_step(fwd, Adam(), clip_grad_norm=1.0),
                            Communicator.single(), backend, bucket_bytes=1024)
    assert len(dp.buckets.buffers) > 2  # several buckets, each all-reduced
    for _ in range(3):
        a, b = fused.step(batch), dp.step(batch)
        # the gradients are the same; copied into contiguous buckets, NumPy may sum their
        # squares in another order than on the (strided) arrays of the fused step
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-6)
        assert float(b["grad_norm"]) == pytest.approx(float(a["grad_norm"]), rel=1e-6)
    fs, ds = fused.state(), dp.state()
    for k in fs:
        np.testing.assert_allclose(ds[k], fs[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert dp.comm.stats["allreduce_calls"] == 3 * len(dp.buckets.buffers)


def test_overlapped_buckets_give_the_same_step() -> None:
    require_mpi()
    from lbdl_graph.frontends.training.distributed import Communicator

    fwd, batch = _lenet_step()
    split = make_split_train_step(fwd, Adam())  # type: ignore[arg-type]
    comm = Communicator.single()
    plain = DataParallelRunner(split, comm, bucket_bytes=256)
    early = DataParallelRunner(split, comm, bucket_bytes=256, overlap=True)
    assert len(early.buckets.buffers) >= 3
    for _ in range(2):
        assert float(plain.step(batch)["loss"]) == float(early.step(batch)["loss"])
    for k, v in plain.state().items():
        assert np.array_equal(v, early.state()[k]), k
    with pytest.raises(InputError, match="overlap=True needs the numpy backend"):
        DataParallelRunner(split, comm, "onnxruntime", overlap=True)
