"""A dependency-free PNG writer (zlib + struct) and a helper that tiles images into a grid."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lbdl_graph.errors import InputError

__all__ = ["diverging", "image_grid", "write_png"]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def write_png(path: str | Path, image: np.ndarray, scale: int = 1) -> Path:
    """Write ``image`` (H, W) grey or (H, W, 3) RGB, values in [0, 1], as an 8-bit PNG; each
    pixel becomes a ``scale`` x ``scale`` block. Returns the path."""
    a = np.asarray(image, np.float64)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or a.size == 0:
        raise InputError(f"write_png: image must be (H, W) or (H, W, 3), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"write_png: image for {path} has non-finite values")
    if scale < 1:
        raise InputError(f"write_png: scale must be >= 1, got {scale}")
    a = np.repeat(np.repeat(a, scale, 0), scale, 1)
    pix = np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
    h, w = pix.shape[:2]
    colour = 2 if pix.ndim == 3 else 0
    rows = pix.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                    + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))
    return out


def diverging(a: np.ndarray) -> np.ndarray:
    """Signed values as RGB: red positive, blue negative, white zero, scaled by max |a|."""
    a = np.asarray(a, np.float64)
    m = float(np.max(np.abs(a), initial=0.0)) or 1.0
    t = np.clip(a / m, -1.0, 1.0)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    return np.stack([1 - neg, 1 - pos - neg, 1 - pos], -1)


def image_grid(tiles: Sequence[Sequence[np.ndarray]], pad: int = 1) -> np.ndarray:
    """Rows of equally shaped (H, W) or (H, W, 3) tiles as one RGB image, ``pad`` white pixels
    between tiles."""
    if not tiles or not tiles[0]:
        raise InputError("image_grid: no tiles")
    rgb = [[np.repeat(np.asarray(t, np.float64)[..., None], 3, -1) if np.ndim(t) == 2
            else np.asarray(t, np.float64) for t in row] for row in tiles]
    h, w = rgb[0][0].shape[:2]
    if any(t.shape != (h, w, 3) for row in rgb for t in row):
        raise InputError("image_grid: tiles differ in shape")
    cols = max(len(r) for r in rgb)
    out = np.ones((len(rgb) * (h + pad) + pad, cols * (w + pad) + pad, 3))
    for i, row in enumerate(rgb):
        for j, t in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = t
    return out
