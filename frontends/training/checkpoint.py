"""Checkpoints: training state saved as safetensors, atomically, with a checksum.

A checkpoint holds every state tensor of a compiled training step (parameters, optimizer state,
the step counter that also drives the random-number counter, batch-norm statistics) plus JSON
metadata. It is written to a temporary file in the same directory, fsynced and renamed over the
target, so a crash never leaves a half-written checkpoint and the previous one stays intact.
Loading verifies a SHA-256 checksum over names, dtypes, shapes and bytes. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from lbdl_graph.errors import CheckpointError
from lbdl_graph.filemode import chmod_like_open

__all__ = ["FORMAT", "checksum", "load_checkpoint", "save_checkpoint"]

FORMAT = "lbdl-graph-checkpoint/1"


def checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.asarray(tensors[name], order="C")  # keeps 0-d arrays 0-d
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``state`` (name → array) and JSON-serialisable ``meta`` atomically to ``path``."""
    path = Path(path)
    tensors = {k: np.asarray(v, order="C") for k, v in state.items()}
    bad = [k for k, v in tensors.items() if v.dtype.kind not in "fiub"]
    if bad:
        raise CheckpointError(f"cannot checkpoint non-numeric tensors {bad}")
    try:
        extra = json.dumps(dict(meta or {}))
    except TypeError as e:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {e}") from None
    header = {"format": FORMAT, "checksum": checksum(tensors), "meta": extra}
    data = st_save(tensors, metadata=header)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write checkpoint {path}: directory {path.parent} does "
                              "not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        chmod_like_open(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    return path


def _header(data: bytes, path: Path) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError(f"checkpoint {path} is truncated (header claims {n} bytes)")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        raise CheckpointError(f"checkpoint {path} has a corrupted header") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    meta = meta or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has a corrupted header (metadata is a "
                              f"{type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lbdl-graph checkpoint (format "
                              f"{meta.get('format')!r})")
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint; returns (state, meta). Raises CheckpointError if it is missing,
    truncated or corrupted (checksum mismatch)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    meta = _header(data, path)
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types on damaged payloads
        raise CheckpointError(f"checkpoint {path} is damaged: {e}") from None
    tensors = dict(tensors)
    if checksum(tensors) != meta.get("checksum"):
        raise CheckpointError(f"checkpoint {path} failed its checksum (corrupted)")
    return tensors, _user_meta(meta.get("meta", "{}"), path)


_META_INTS = ("epoch", "batch", "samples", "world_size", "bad_epochs")


def _user_meta(text: Any, path: Path) -> dict[str, Any]:
    """The training metadata, checked for the shape resume and merge rely on."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} has malformed metadata: {why}",
                               hint="the file was edited or written by another tool; resume "
                                    "from another checkpoint or start afresh")
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    for key in _META_INTS:
        v = meta.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"'{key}' must be a non-negative integer, got {v!r}")
    for key in ("best_score",):
        v = meta.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise bad(f"'{key}' must be a number, got {v!r}")
    be = meta.get("best_epoch")
    if be is not None and (isinstance(be, bool) or not isinstance(be, int)):
        raise bad(f"'best_epoch' must be an integer or null, got {be!r}")
    hist = meta.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(e, dict) for e in hist):
        raise bad("'history' must be a list of objects (one per epoch)")
    return meta
