"""Launching small scripts under ``mpiexec -n N`` on loopback from pytest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def mpiexec() -> str | None:
    """The mpiexec next to this Python (a venv with the mpich wheel), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def require_mpi() -> None:
    """Skip (with the reason) when mpi4py or mpiexec is missing."""
    try:
        import mpi4py.MPI  # noqa: F401
    except ImportError as e:
        pytest.skip(f"mpi4py is not installed or finds no MPI library ({e}); "
                    "pip install -e '.[distributed]'")
    if mpiexec() is None:
        pytest.skip("no mpiexec on PATH or next to the Python interpreter")


def mpirun(n: int, script: str, *args: str, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` (or a CLI argv when script is '-') on ``n`` ranks."""
    require_mpi()
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", **(env or {})}
    target = list(args) if script == "-" else [sys.executable, str(SCRIPTS / script), *args]
    cmd = [str(mpiexec()), "-n", str(n), *target]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env,
                          check=False)


def last_json(text: str) -> Any:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in the output:\n{text}")
