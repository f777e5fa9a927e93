"""benchmarks/ort_backend.py's method: every contender in a process of its own, one library
per process, answering check/time commands; the figures carry the thread count."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("onnxruntime")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_contenders_load_one_library_each_and_agree() -> None:
    ob = _load("ort_backend")
    args = argparse.Namespace(providers="cpu", spin=False, repeat=2, calls=1, threads=[1])
    out: dict = {}  # type: ignore[type-arg]
    ob.measure("mlp", args, 1, out)
    libs = out["libraries_per_process"]
    assert libs["ort"] == ["onnxruntime"] and libs["numpy"] == []
    if ob.HAVE_TORCH:
        assert libs["torch"] == ["torch"] and libs["torch_onnx_ort"] == ["onnxruntime"]
        assert out["mlp_train_speedup_vs_torch_t1"] > 0
        assert out["mlp_train_speedup_vs_torch_cpu_t1"] > 0
    assert out["mlp_loss_max_rel_diff"] < 1e-4
    assert out["mlp_first_loss_numpy"] == pytest.approx(out["mlp_first_loss_ort"], rel=1e-4)
    for k in ("ort", "numpy"):
        assert 0 < out[f"mlp_train_{k}_min_ms_t1"] <= out[f"mlp_train_{k}_ms_t1"]
        assert out[f"mlp_train_{k}_spread_t1"] >= 0
        assert out[f"mlp_train_{k}_cpu_ms_t1"] > 0
        assert out[f"mlp_infer_b64_{k}_ms_t1"] > 0


def test_a_contender_reports_errors_and_its_exit() -> None:
    procs = _load("_procs")
    c = procs.Contender("numpy", "mlp", 1)
    try:
        assert "train" in c.tasks and "infer_b1" in c.tasks
        reply = c.ask("time", task="infer_b1", calls=3)
        assert len(reply["times"]) == len(reply["cpu"]) == 3
        with pytest.raises(RuntimeError, match=r"numpy \(mlp\): KeyError"):
            c.ask("time", task="no_such_task", calls=1)
    finally:
        c.close()
    assert c.proc.returncode == 0
    with pytest.raises(RuntimeError, match="exited with status"):
        procs.Contender("no_such_kind", "mlp", 1)


def test_ort_contender_times_the_step_halves() -> None:
    """train_parts.py's tasks: the gradient graph and the update graph run on their own."""
    procs = _load("_procs")
    c = procs.Contender("ort", "mlp", 1)
    try:
        assert {"train", "grad", "update"} <= set(c.tasks)
        for task in ("grad", "update"):
            reply = c.ask("time", task=task, calls=2, warmup=1)
            assert len(reply["times"]) == 2 and min(reply["times"]) > 0
    finally:
        c.close()
    assert c.proc.returncode == 0
