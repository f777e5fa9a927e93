"""benchmarks/gpu_check.py in its CPU mode (--allow-cpu --quick): same checks, quiet, exit 0."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCH))


def test_cpu_mode_passes_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    gc = _load()
    assert gc.main(["--allow-cpu", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # nothing about the missing GPU
    head, row = out.strip().splitlines()
    assert "state_on_device" in head and "torch_train_ms" in head
    cells = row.split()
    assert cells[0] == "mlp" and cells[1] == "cpu" and cells[-1] == "True"


def test_mismatch_exits_nonzero(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    gc = _load()
    real = gc.check_model

    def skewed(name: str, target: Any, steps: int, repeat: int) -> dict[str, Any]:
        row: dict[str, Any] = real(name, target, steps, repeat)
        return {**row, "ok": False}

    monkeypatch.setattr(gc, "check_model", skewed)
    assert gc.main(["--allow-cpu", "--quick"]) == 1
    assert "MISMATCH in ['mlp']" in capsys.readouterr().err


def test_row_flags_state_off_device() -> None:
    gc = _load()
    row = gc.check_model("mlp", "cpu", 1, 1)
    assert row["state_on_device"] and row["ok"]
    assert row["infer_err"] <= gc.RTOL and row["state_err"] <= gc.RTOL
