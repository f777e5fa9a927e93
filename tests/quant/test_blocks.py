"""llama.cpp block formats: bytes equal a literal port of llama.cpp's reference C code, the
Q4_1 struct layout, nibble order, error bounds and sizes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from lbdl_graph.errors import DTypeError, ShapeError
from lbdl_graph.passes.quant import (
    FORMATS,
    block_fields,
    dequantize_blocks,
    pack_nibbles_ort,
    quantize_blocks,
    size_report,
)

F32 = np.float32


def _f16(v: float) -> bytes:
    return struct.pack("<e", v)  # round to nearest even, as GGML_FP32_TO_FP16


def _llama_reference(x: np.ndarray, fmt: str) -> bytes:
    """quantize_row_{q4_0,q4_1,q8_0}_ref from ggml-quants.c, one float32 scalar at a time."""
    out = bytearray()
    for blk in x.astype(F32).reshape(-1, 32):
        v = [F32(t) for t in blk]
        if fmt == "q4_1":
            mn, mx = min(v), max(v)
            d = (mx - mn) / F32(15)
            idv = F32(1) / d if d else F32(0)
            qs = bytearray(16)
            for j in range(16):
                x0 = (v[j] - mn) * idv
                x1 = (v[j + 16] - mn) * idv
                qs[j] = min(15, int(x0 + F32(0.5))) | (min(15, int(x1 + F32(0.5))) << 4)
            out += _f16(float(d)) + _f16(float(mn)) + qs
        elif fmt == "q4_0":
            amax, mx = F32(0), F32(0)
            for t in v:
                if amax < abs(t):
                    amax, mx = abs(t), t
            d = mx / F32(-8)
            idv = F32(1) / d if d else F32(0)
            qs = bytearray(16)
            for j in range(16):
                x0 = v[j] * idv
                x1 = v[j + 16] * idv
                qs[j] = min(15, int(x0 + F32(8.5))) | (min(15, int(x1 + F32(8.5))) << 4)
            out += _f16(float(d)) + qs
        else:
            amax = max(abs(t) for t in v)
            d = amax / F32(127)
            idv = F32(1) / d if d else F32(0)
            q = [int(np.copysign(np.floor(abs(t * idv) + 0.5), t * idv)) for t in v]
            out += _f16(float(d)) + struct.pack("<32b", *q)
    return bytes(out)


def _matrix(rng: np.random.Generator, rows: int = 4, k: int = 64) -> np.ndarray:
    x = (rng.standard_normal((rows, k)) * rng.uniform(0.01, 3, (rows, 1))).astype(F32)
    x[0, :32] = 1.5  # a constant block (d = 0)
    x[1, 32:64] = 0.0  # all zeros
    x[2, :32] = -np.abs(x[2, :32]) - 2  # all negative, far from 0
    x[3, 32:64] = np.arange(32, dtype=F32) / 4 - 4  # exact halves and ties
    return x


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_bytes_equal_llama_cpp_reference(fmt: str) -> None:
    x = _matrix(np.random.default_rng(0))
    buf = quantize_blocks(x, fmt)
    assert buf.dtype == np.uint8 and buf.ndim == 1
    assert buf.size == 8 * FORMATS[fmt].bytes_per_block
    assert buf.tobytes() == _llama_reference(x, fmt)


def test_q4_1_byte_layout() -> None:
    x = np.arange(64, dtype=F32).reshape(1, 64) * F32(0.5) - F32(3)  # two blocks
    buf = quantize_blocks(x, "q4_1")
    assert FORMATS["q4_1"].bytes_per_block == 20 and buf.size == 40
    blk = buf[:20].tobytes()
    d, m = struct.unpack("<ee", blk[:4])  # fp16 d at offset 0, fp16 m at offset 2
    assert m == -3.0 and d == pytest.approx(15.5 / 15, rel=1e-3)
    codes = [round((v - m) / (15.5 / 15)) for v in x[0, :32]]
    for j in range(16):  # byte 4 + j: weight j in the low nibble, weight j + 16 in the high one
        assert blk[4 + j] & 0x0F == codes[j]
        assert blk[4 + j] >> 4 == codes[j + 16]
    assert struct.unpack("<e", buf[20:22].tobytes())[0] == pytest.approx(d, rel=1e-3)
    assert struct.unpack("<e", buf[22:24].tobytes())[0] == 13.0  # second block's minimum


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip_error_bounds(fmt: str) -> None:
    x = _matrix(np.random.default_rng(1), rows=6, k=96)
    buf = quantize_blocks(x, fmt)
    y = dequantize_blocks(buf, fmt, x.shape)
    assert y.shape == x.shape and y.dtype == F32
    fl = block_fields(buf, fmt, x.shape)
    xb = x.reshape(6, 3, 32)
    err = np.abs(y.reshape(6, 3, 32) - xb)
    d16 = fl.d.astype(F32)[..., None]
    if fmt == "q4_1":  # codes use the float32 d and min, storage their fp16 roundings
        mn, mx = xb.min(-1, keepdims=True), xb.max(-1, keepdims=True)
        d32 = (mx - mn) / F32(15)
        assert fl.m is not None
        bound = d32 / 2 + 15 * np.abs(d32 - d16) + np.abs(mn - fl.m.astype(F32)[..., None])
    elif fmt == "q4_0":  # the code 16 of -max saturates to 15: one step off there
        d32 = np.abs(xb).max(-1, keepdims=True) / 8
        top = np.abs(xb) * 8 > 7.5 * np.abs(xb).max(-1, keepdims=True)
        bound = np.where(top, d32, d32 / 2) + 8 * np.abs(d32 - np.abs(d16))
    else:
        d32 = np.abs(xb).max(-1, keepdims=True) / 127
        bound = d32 / 2 + 127 * np.abs(d32 - d16)
    assert np.all(err <= bound + 1e-6 * np.abs(xb).max())
    assert np.all(y[1, 32:64] == 0)  # a zero block stays exactly zero
    if fmt == "q4_1":  # a constant block is m exactly (d = 0)
        assert np.all(err[0, 0] == 0)


def test_padding_and_shape_errors() -> None:
    x = np.random.default_rng(2).standard_normal((3, 40)).astype(F32)
    with pytest.raises(ShapeError, match="not a multiple of the block size 32"):
        quantize_blocks(x, "q4_1")
    buf = quantize_blocks(x, "q4_1", pad=True)
    assert buf.size == 3 * 2 * 20
    y = dequantize_blocks(buf, "q4_1", x.shape)
    assert y.shape == (3, 40) and np.abs(y - x).max() < 0.25
    with pytest.raises(ShapeError, match=r"must be u8\[120\]"):
        dequantize_blocks(buf[:-1], "q4_1", x.shape)
    with pytest.raises(DTypeError, match="unknown block format"):
        quantize_blocks(x, "q5_k")
    with pytest.raises(DTypeError, match="float matrix"):
        quantize_blocks(np.zeros((2, 32), np.int32), "q8_0")


def test_ort_nibble_order() -> None:
    codes = np.arange(32, dtype=np.uint8) % 16
    packed = pack_nibbles_ort(codes)
    assert packed.shape == (16,)
    assert list(packed[:3]) == [0x10, 0x32, 0x54]  # weight 2j low, weight 2j + 1 high


@pytest.mark.parametrize(("fmt", "ratio"), [("q4_1", 20 / 128), ("q4_0", 18 / 128),
                                            ("q8_0", 34 / 128)])
def test_size_report(fmt: str, ratio: float) -> None:
    r = size_report((256, 512), fmt)
    assert r.bytes_before == 256 * 512 * 4
    assert r.bytes_after == quantize_blocks(np.ones((256, 512), F32), fmt).size
    assert r.ratio == pytest.approx(ratio)
    assert r.bits_per_weight == pytest.approx(FORMATS[fmt].bits_per_weight)
    if fmt == "q4_1":
        assert r.ratio <= 0.16 and "ratio 0.1562" in str(r)
    assert (r + r).bytes_after == 2 * r.bytes_after
