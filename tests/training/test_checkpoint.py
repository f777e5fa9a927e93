"""Checkpoints: round trip, atomicity, corruption and truncation detection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lbdl_graph.errors import CheckpointError
from lbdl_graph.frontends.training import load_checkpoint, save_checkpoint

STATE = {
    "fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "opt.m/fc.weight": np.full((3, 4), 0.5, np.float32),
    "step": np.array(7, np.int64),
    "bn.num_batches_tracked": np.array(3, np.int64),
}


def test_round_trip(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "ck.safetensors", STATE, {"epoch": 2, "seed": 0})
    state, meta = load_checkpoint(p)
    assert meta == {"epoch": 2, "seed": 0}
    assert set(state) == set(STATE)
    for k, v in STATE.items():
        np.testing.assert_array_equal(state[k], v)
        assert state[k].dtype == v.dtype and state[k].shape == v.shape


def test_flipped_byte_fails_checksum(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "ck.safetensors", STATE)
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor payload
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(p)


@pytest.mark.parametrize("keep", [0, 5, 40, -10])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    p = save_checkpoint(tmp_path / "ck.safetensors", STATE)
    data = p.read_bytes()
    p.write_bytes(data[:keep])
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_not_a_checkpoint_and_missing(tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ")
    with pytest.raises(CheckpointError, match="not an lbdl-graph checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    p = save_checkpoint(tmp_path / "ck.safetensors", STATE)
    before = p.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    changed = {**STATE, "step": np.array(8, np.int64)}
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(p, changed)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left


def test_bad_metadata_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "a.safetensors", STATE, {"x": object()})
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "a.safetensors", STATE)
