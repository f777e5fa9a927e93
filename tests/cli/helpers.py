"""Running the CLI as a subprocess and checking the shape of its failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path | None = None, timeout: float = 180
        ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lbdl_graph ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "lbdl_graph", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def fails(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Assert exit ``code``, no traceback, and ``words`` in stderr."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
