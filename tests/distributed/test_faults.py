"""Faults: a rank that raises, hangs or dies ends the job within the timeout, naming the rank;
ranks started with other weights or settings are refused at start-up on every rank."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .helpers import mpirun


def _results(d: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("rank*.json"))]


def test_no_fault_trains(tmp_path: Path) -> None:
    r = mpirun(2, "faults.py", "ok", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = _results(tmp_path)
    assert sorted(d["rank"] for d in lines) == [0, 1]
    assert len({d["loss"] for d in lines}) == 1  # every rank reports the global average
    assert r.stderr.count("data parallel: 2 ranks") == 1  # only rank 0 logs


def test_a_rank_that_raises_aborts_every_rank(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = mpirun(3, "faults.py", "raise", str(tmp_path), timeout=60)
    assert time.monotonic() - t0 < 30  # no waiting for the 30 s collective timeout
    assert r.returncode != 0
    assert "rank 1 of 3 failed: ValueError: injected failure" in r.stderr
    assert "aborting all 3 ranks" in r.stderr


def test_bad_input_on_one_rank_aborts_every_rank(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = mpirun(2, "faults.py", "badinput", str(tmp_path), timeout=60)
    assert time.monotonic() - t0 < 25  # not the 30 s the other rank would wait in a collective
    assert r.returncode != 0
    assert ("rank 1 of 2 failed: inputs and targets differ in length: {'x': 64, 'y': 65}"
            in r.stderr), r.stderr


def test_a_hung_rank_is_named_after_the_timeout(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = mpirun(3, "faults.py", "hang", str(tmp_path), env={"FAULT_TIMEOUT": "1"}, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode != 0
    assert took < 30, took  # far less than the hung rank's 600 s sleep
    assert re.search(r"rank [02] of 3 failed: rank [02] of 3: gradient all-reduce of step 3 did "
                     r"not complete within 1 s; rank\(s\) 1 did not reach it", r.stderr), r.stderr


def test_a_dead_rank_ends_the_job_and_its_pid_maps_to_its_rank(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = mpirun(2, "faults.py", "die", str(tmp_path), timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode != 0
    out = r.stdout + r.stderr
    pids = dict(re.findall(r"(\d)=[^:]+:(\d+)", out.split("data parallel:")[1].split(")")[0]))
    assert sorted(pids) == ["0", "1"] and len(set(pids.values())) == 2, out
    # MPICH names the first process whose end it saw: the dead rank, or on a loaded machine the
    # rank it took down; either way the start-up line maps that PID to its rank
    named = re.findall(r"PID (\d+) RUNNING", out)
    assert named and set(named) <= set(pids.values()), (pids, named)
    assert not (tmp_path / "rank1.json").exists()  # rank 1 died before it could report


def test_other_weights_or_settings_are_refused_on_every_rank(tmp_path: Path) -> None:
    r = mpirun(3, "faults.py", "mismatch", str(tmp_path))
    assert r.returncode != 0
    lines = _results(tmp_path)
    assert sorted(d["rank"] for d in lines) == [0, 1, 2]  # every rank raised, none aborted
    for d in lines:
        assert d["collective"] and d["ranks"] == [1, 2]
        assert "initial state (parameters) differs on rank(s) 1 " in str(d["error"])
        assert "settings (model graph, optimizer, batch) differs on rank(s) 2 " in str(d["error"])
        assert "training data" not in str(d["error"])
