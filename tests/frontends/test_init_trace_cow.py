"""Weight init in parallel chunks (reproducible at any thread count), skipped defaults, and
copy-on-write sharing of leaves with traced graphs."""

from __future__ import annotations

import multiprocessing
from typing import Any

import numpy as np
import pytest

from lbdl_graph.frontends import init, manual_seed, nn, trace
from lbdl_graph.frontends.zoo import ZOO


def _big(monkeypatch: pytest.MonkeyPatch, workers: int) -> np.ndarray:
    monkeypatch.setattr(init, "_CHUNK", 1000)
    monkeypatch.setattr(init, "_workers", lambda: workers)
    manual_seed(3)
    arr = np.zeros((7, 1100), np.float32)
    init.normal_(arr, 0.5, 2.0)
    return arr


def test_chunked_draws_do_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    one, four = _big(monkeypatch, 1), _big(monkeypatch, 4)
    np.testing.assert_array_equal(one, four)
    chunks = one.reshape(-1)[: 7 * 1000].reshape(7, 1000)
    assert len({c.tobytes() for c in chunks}) == 7  # each chunk has its own stream
    assert abs(float(one.mean()) - 0.5) < 0.1 and abs(float(one.std()) - 2.0) < 0.1


def test_uniform_chunks_stay_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init, "_CHUNK", 64)
    arr = np.zeros(1000, np.float32)
    init.uniform_(arr, -3.0, -1.0)
    assert arr.min() >= -3.0 and arr.max() < -1.0 and arr.std() > 0.4


def test_skip_random_leaves_defaults_undrawn_and_gpt_draws_each_weight() -> None:
    with init.skip_random():
        lin = nn.Linear(4, 3)
    assert not lin.weight.data.any() and not lin.bias.data.any()
    manual_seed(0)
    gpt = ZOO["gpt_tiny"].model()
    std = ZOO["gpt_tiny"].config.init_std
    for name, p in gpt.named_parameters():
        if name.endswith("bias"):
            continue
        if ".ln" in name or name.startswith("ln_f"):
            np.testing.assert_array_equal(p.data, 1.0)
        else:
            assert p.data.std() > std / 10, name  # drawn, not left at zero
    manual_seed(0)
    again = ZOO["gpt_tiny"].model()
    for (_, a), (_, b) in zip(gpt.named_parameters(), again.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_trace_shares_weights_and_later_writes_do_not_reach_the_graph() -> None:
    lin = nn.Linear(4, 3)
    g = trace(lin, [("N", 4)])
    w = g.param_map["weight"].data
    assert not w.flags.writeable
    before = w.copy()
    lin.weight.data[...] = 7.0  # the leaf copies first
    np.testing.assert_array_equal(g.param_map["weight"].data, before)
    np.testing.assert_array_equal(lin.weight.data, 7.0)
    g2 = trace(lin, [("N", 4)])
    np.testing.assert_array_equal(g2.param_map["weight"].data, 7.0)


def test_empty_is_zeros_and_restores_numpy_hugepage_setting() -> None:
    big = init.empty(1024, 2048)  # 8 MiB: allocated without the huge-page hint
    assert big.shape == (1024, 2048) and big.dtype == np.float32 and not big.any()
    small = init.empty(3, dtype=np.float64)
    assert small.dtype == np.float64 and not small.any()
    switch = init._HUGEPAGE
    if switch is None:
        pytest.skip("this NumPy has no huge-page switch")
    before = switch(True)
    switch(before)
    try:
        for setting in (True, False):
            switch(setting)
            init.empty(2048, 1024, dtype=np.float64)
            assert switch(setting) is setting  # the setting the caller had is back
    finally:
        switch(before)


def _child_draw(queue: Any) -> None:
    arr = np.zeros(5000, np.float32)
    init.normal_(arr)
    queue.put(float(arr.std()))


def test_a_forked_child_draws_big_arrays_on_its_own_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(init, "_CHUNK", 1000)
    init.normal_(np.zeros(5000, np.float32))  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_draw, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the child hung or failed drawing on the inherited pool"
    assert 0.9 < queue.get(timeout=5) < 1.1
