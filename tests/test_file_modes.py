"""Files written through the atomic helpers get the umask's mode, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.frontends.cli.common import atomic_write
from lbdl_graph.frontends.training.checkpoint import save_checkpoint


@pytest.fixture(params=[0o022, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_mode(tmp_path: Path, umask: int) -> None:
    p = atomic_write(tmp_path / "summary.txt", "hello")
    assert _mode(p) == 0o666 & ~umask


def test_checkpoint_mode(tmp_path: Path, umask: int) -> None:
    p = save_checkpoint(tmp_path / "c.safetensors", {"w": np.ones(3, np.float32)})
    assert _mode(Path(p)) == 0o666 & ~umask
