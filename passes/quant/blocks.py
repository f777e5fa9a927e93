"""llama.cpp's block quantisation formats, byte for byte (book chapter 8).

A float matrix is cut, row by row, into blocks of 32 consecutive weights; each block is stored
as a little-endian C struct (``ggml-common.h``):

======  ===========================================  =====  ===========================
format  fields                                       bytes  dequantised value
======  ===========================================  =====  ===========================
Q4_0    fp16 d, 16 bytes of 4-bit codes q            18     (q - 8) * d
Q4_1    fp16 d, fp16 m, 16 bytes of 4-bit codes q    20     d * q + m
Q8_0    fp16 d, 32 int8 codes q                      34     q * d
======  ===========================================  =====  ===========================

4-bit codes are packed as llama.cpp does: byte j holds weight j in its low nibble and weight
j + 16 in its high nibble. Quantisation follows llama.cpp's reference C code
(``quantize_row_q4_0_ref`` and friends) in float32, so the bytes match llama.cpp's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph.errors import DTypeError, ShapeError

__all__ = [
    "FORMATS",
    "QK",
    "BlockFields",
    "BlockFormat",
    "SizeReport",
    "block_fields",
    "dequantize_blocks",
    "pack_nibbles_ort",
    "quantize_blocks",
    "size_report",
]

QK = 32  # weights per block in all three formats
F32 = np.float32


@dataclass(frozen=True)
class BlockFormat:
    """One block format: its name, bits per code and the NumPy struct of one block."""

    name: str
    bits: int
    struct: np.dtype[Any]

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block of :data:`QK` weights."""
        return int(self.struct.itemsize)

    @property
    def bits_per_weight(self) -> float:
        """Average storage bits per weight, scale (and minimum) included."""
        return 8 * self.bytes_per_block / QK


FORMATS: dict[str, BlockFormat] = {
    "q4_0": BlockFormat("q4_0", 4, np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])),
    "q4_1": BlockFormat("q4_1", 4, np.dtype([("d", "<f2"), ("m", "<f2"),
                                             ("qs", "u1", (QK // 2,))])),
    "q8_0": BlockFormat("q8_0", 8, np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])),
}


def _format(fmt: str | BlockFormat) -> BlockFormat:
    if isinstance(fmt, BlockFormat):
        return fmt
    try:
        return FORMATS[fmt.lower()]
    except KeyError:
        raise DTypeError(f"unknown block format {fmt!r}; use one of {sorted(FORMATS)}") from None


def _blocks(x: np.ndarray, pad: bool, what: str) -> tuple[np.ndarray, int]:
    """``x`` (rows, K) as float32 blocks (rows * ceil(K/32), 32); zero-padded if ``pad``."""
    x = np.asarray(x)
    if x.ndim < 1 or x.dtype.kind != "f":
        raise DTypeError(f"{what}: expected a float matrix, got {x.dtype}{list(x.shape)}")
    k = x.shape[-1]
    rows = x.reshape(-1, k).astype(F32)
    if k % QK:
        if not pad:
            raise ShapeError(f"{what}: the last dim {k} of shape {list(x.shape)} is not a "
                             f"multiple of the block size {QK}",
                             hint="pass pad=True to zero-pad each row to a whole block")
        rows = np.pad(rows, ((0, 0), (0, -k % QK)))
    return rows.reshape(-1, QK), k


def _nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit codes (n, 32) -> 16 bytes: weight j low nibble, weight j + 16 high nibble."""
    return (q[:, : QK // 2] | (q[:, QK // 2:] << 4)).astype(np.uint8)


def _round_away(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: to nearest, halves away from zero (exact for every float32)."""
    r = np.trunc(v)
    return r + np.sign(v) * (np.abs(v - r) >= 0.5)


def quantize_blocks(x: np.ndarray, fmt: str | BlockFormat, *, pad: bool = False) -> np.ndarray:
    """Quantise a float array row by row (blocks along the last axis) into a packed uint8 buffer
    of ``rows * ceil(K / 32) * bytes_per_block`` bytes.

    A last dim that is not a multiple of 32 raises :class:`ShapeError` unless ``pad``, which
    zero-pads each row (:func:`dequantize_blocks` cuts the padding off again).
    """
    f = _format(fmt)
    xb, _ = _blocks(x, pad, f"quantize_blocks({f.name})")
    out = np.zeros(len(xb), dtype=f.struct)
    with np.errstate(divide="ignore", invalid="ignore"):
        if f.name == "q4_1":
            lo, hi = xb.min(axis=1), xb.max(axis=1)
            d = (hi - lo) / F32(15)
            inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
            q = np.minimum(15, np.trunc((xb - lo[:, None]) * inv[:, None] + F32(0.5)))
            out["m"] = lo.astype(np.float16)
            out["qs"] = _nibbles(q.astype(np.uint8))
        elif f.name == "q4_0":
            at = np.abs(xb).argmax(axis=1)  # first element of largest magnitude, sign kept
            d = xb[np.arange(len(xb)), at] / F32(-8)
            inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
            q = np.minimum(15, np.trunc(xb * inv[:, None] + F32(8.5)))
            out["qs"] = _nibbles(q.astype(np.uint8))
        else:
            d = np.abs(xb).max(axis=1) / F32(127)
            inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
            out["qs"] = _round_away(xb * inv[:, None]).astype(np.int8)
    out["d"] = d.astype(np.float16)
    return out.view(np.uint8)


@dataclass(frozen=True)
class BlockFields:
    """The fields of a buffer's blocks as arrays over (rows, blocks per row): ``d`` and ``m``
    (float16; ``m`` is None except for Q4_1) and the codes (rows, blocks, 32) in weight
    order (uint8 for the 4-bit formats, int8 for Q8_0)."""

    d: np.ndarray
    m: np.ndarray | None
    codes: np.ndarray


def _view(buf: np.ndarray, f: BlockFormat, shape: Sequence[int]) -> tuple[np.ndarray, int, int]:
    buf = np.ascontiguousarray(buf)
    k = int(shape[-1])
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    nb = -(-k // QK)
    want = rows * nb * f.bytes_per_block
    if buf.dtype != np.uint8 or buf.ndim != 1 or buf.size != want:
        raise ShapeError(f"{f.name} buffer for shape {list(shape)} must be u8[{want}] "
                         f"({rows * nb} blocks of {f.bytes_per_block} bytes), got "
                         f"{buf.dtype}{list(buf.shape)}")
    return buf.view(f.struct), rows, nb


def block_fields(buf: np.ndarray, fmt: str | BlockFormat, shape: Sequence[int]) -> BlockFields:
    """Unpack a buffer made by :func:`quantize_blocks` for an array of ``shape``."""
    f = _format(fmt)
    blocks, rows, nb = _view(buf, f, shape)
    qs = blocks["qs"]
    codes = qs if f.bits == 8 else np.concatenate([qs & 15, qs >> 4], axis=1)
    m = blocks["m"].reshape(rows, nb) if "m" in (f.struct.names or ()) else None
    return BlockFields(blocks["d"].reshape(rows, nb), m, codes.reshape(rows, nb, QK))


def dequantize_blocks(buf: np.ndarray, fmt: str | BlockFormat,
                      shape: Sequence[int]) -> np.ndarray:
    """The float32 array of ``shape`` a buffer stands for (llama.cpp's dequantize_row_*)."""
    f = _format(fmt)
    fl = block_fields(buf, f, shape)
    d = fl.d.astype(F32)[..., None]
    if f.name == "q4_1":
        assert fl.m is not None
        x = d * fl.codes.astype(F32) + fl.m.astype(F32)[..., None]
    elif f.name == "q4_0":
        x = (fl.codes.astype(F32) - F32(8)) * d
    else:
        x = fl.codes.astype(F32) * d
    k = int(shape[-1])
    return x.reshape(-1, x.shape[1] * QK)[:, :k].reshape(tuple(shape))


def pack_nibbles_ort(codes: np.ndarray) -> np.ndarray:
    """4-bit codes (..., 32) in weight order -> ONNX Runtime's MatMulNBits bytes (..., 16):
    byte j holds weight 2j in its low nibble and weight 2j + 1 in its high nibble."""
    c = codes.astype(np.uint8)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


@dataclass(frozen=True)
class SizeReport:
    """Storage of one or more matrices before and after quantisation."""

    elements: int
    bytes_before: int
    bytes_after: int

    @property
    def ratio(self) -> float:
        """bytes_after / bytes_before."""
        return self.bytes_after / self.bytes_before if self.bytes_before else 1.0

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per original element."""
        return 8 * self.bytes_after / self.elements if self.elements else 0.0

    def __add__(self, other: SizeReport) -> SizeReport:
        return SizeReport(self.elements + other.elements, self.bytes_before + other.bytes_before,
                          self.bytes_after + other.bytes_after)

    def __str__(self) -> str:
        return (f"{self.elements} weights: {self.bytes_before} -> {self.bytes_after} bytes "
                f"(ratio {self.ratio:.4f}, {self.bits_per_weight:.2f} bits/weight)")


def size_report(shape: Sequence[int], fmt: str | BlockFormat, *,
                itemsize: int = 4) -> SizeReport:
    """Bytes of a float array of ``shape`` (``itemsize`` bytes per element, fp32 by default)
    before and after block quantisation (padded blocks included)."""
    f = _format(fmt)
    k = int(shape[-1])
    n = int(np.prod(shape, dtype=np.int64))
    rows = n // k if k else 0
    return SizeReport(n, n * itemsize, rows * -(-k // QK) * f.bytes_per_block)
