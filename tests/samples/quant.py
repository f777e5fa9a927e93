"""Samples of the quantisation ops.

Oracles: ONNX's reference evaluator for quantize_linear / dequantize_linear (one node), and for
fake_quantize (QuantizeLinear then DequantizeLinear) and dynamic_quant_matmul
(DynamicQuantizeLinear, MatMulInteger, a float rescale) as small ONNX chains. ONNX has no
MatMulNBits, so its oracle reads every code out of the packed bytes with index arithmetic.
Codes and zero points come from random integers; ties (x / scale = k + 0.5) and saturating
values are fixed inputs, since random floats almost never hit them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from lbdl_graph import ops
from lbdl_graph.dtypes import dtype
from tests.op_db import Arrays, OpSample
from tests.samples.elementwise import Gen, fixed, floats, inputs, ints, onnx_type

__all__ = ["SAMPLES", "nbits_reference", "onnx_chain"]


def onnx_chain(nodes: Sequence[Any], feeds: dict[str, np.ndarray], outputs: Sequence[str],
               opset: int = 21) -> list[np.ndarray]:
    """Run a few ONNX nodes on ``feeds`` with the ONNX reference evaluator."""
    graph = helper.make_graph(
        list(nodes), "oracle",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, 0, None) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(model).run(None, feeds))


def _const(value: float, dt: str) -> Gen:
    return fixed(value, dt)


def _pos(*shape: int, lo: float = 0.02, hi: float = 0.3, dt: str = "float32") -> Gen:
    return floats(*shape, dt=dt, lo=lo, hi=hi)


def _q(label: str, x: Gen, scale: Gen, zp: Gen | None = None, to: str | None = None,
       **attrs: Any) -> OpSample:
    gens = [x, scale] + ([zp] if zp is not None else [])
    onnx_attrs = dict(attrs)
    if zp is None and to is not None:
        onnx_attrs["output_dtype"] = onnx_type(to)
    if to is not None:
        attrs["to"] = to
    return OpSample(ops.quantize_linear, inputs(*gens), attrs=attrs, label=label,
                    onnx_op="QuantizeLinear", onnx_attrs=onnx_attrs, grad=False)


def _dq(label: str, q: Gen, scale: Gen, zp: Gen | None = None, **attrs: Any) -> OpSample:
    gens = [q, scale] + ([zp] if zp is not None else [])
    return OpSample(ops.dequantize_linear, inputs(*gens), attrs=attrs, label=label,
                    onnx_op="DequantizeLinear", onnx_attrs=dict(attrs), grad=False)


_TIES = fixed([[0.25, 0.75, 1.25, -0.25, -0.75, -1.25], [3.0, -3.0, 100.0, -100.0, 0.0, 1.75]])

QUANTIZE = [
    _q("u8_tensor", floats(3, 4, lo=-6, hi=6), _const(0.05, "float32"), _const(100, "uint8")),
    _q("i8_no_zp", floats(2, 3, 5, lo=-8, hi=8), _const(0.04, "float32"), to="int8"),
    _q("u8_default", floats(7, lo=-1, hi=9), _const(0.03, "float32")),
    _q("ties_i8", _TIES, _const(0.5, "float32"), _const(0, "int8")),
    _q("ties_u8_saturate", _TIES, _const(0.5, "float32"), _const(3, "uint8")),
    _q("i8_axis1", floats(2, 4, 3, lo=-5, hi=5), _pos(4), ints(4, dt="int8", lo=-20, hi=20),
       axis=1),
    _q("u8_axis0", floats(3, 6, lo=-5, hi=5), _pos(3), ints(3, dt="uint8", lo=0, hi=255),
       axis=0),
    _q("u8_axis_neg", floats(2, 5, lo=-5, hi=5), _pos(5), ints(5, dt="uint8", lo=0, hi=255),
       axis=-1),
    _q("f16", floats(4, 6, dt="float16", lo=-3, hi=3), _const(0.02, "float16"),
       _const(-3, "int8")),
    _q("u8_blocked", floats(4, 40, lo=-4, hi=4), _pos(4, 3), ints(4, 3, dt="uint8", lo=0,
                                                                    hi=255),
       axis=1, block_size=16),
    _q("i8_blocked_axis0", floats(35, 3, lo=-4, hi=4), _pos(3, 3), to="int8", axis=0,
       block_size=16),
    _q("i4_blocked", floats(6, 64, lo=-1, hi=1), _pos(6, 2, lo=0.05, hi=0.2), to="int4",
       axis=1, block_size=32),
    _q("u4_tensor", floats(3, 5, lo=-1, hi=1), _const(0.1, "float32"), _const(8, "uint4")),
    _q("u4_axis", floats(3, 5, lo=-1, hi=1), _pos(5, lo=0.05, hi=0.2),
       ints(5, dt="uint4", lo=0, hi=16), axis=1),
]

DEQUANTIZE = [
    _dq("u8_tensor", ints(3, 4, dt="uint8", lo=0, hi=256), _const(0.05, "float32"),
        _const(100, "uint8")),
    _dq("i8_no_zp", ints(2, 3, 5, dt="int8", lo=-128, hi=128), _const(0.04, "float32")),
    _dq("i8_axis1", ints(2, 4, 3, dt="int8", lo=-128, hi=128), _pos(4),
        ints(4, dt="int8", lo=-20, hi=20), axis=1),
    _dq("u8_axis0", ints(3, 6, dt="uint8", lo=0, hi=256), _pos(3),
        ints(3, dt="uint8", lo=0, hi=256), axis=0),
    _dq("i32_bias", ints(6, dt="int32", lo=-5000, hi=5000), _const(1e-4, "float32")),
    _dq("f16_scale", ints(4, 6, dt="int8", lo=-128, hi=128), _const(0.02, "float16"),
        _const(-3, "int8")),
    _dq("u8_blocked", ints(4, 40, dt="uint8", lo=0, hi=256), _pos(4, 3),
        ints(4, 3, dt="uint8", lo=0, hi=256), axis=1, block_size=16),
    _dq("i4_blocked_axis0", ints(64, 5, dt="int4", lo=-8, hi=8), _pos(2, 5), axis=0,
        block_size=32),
    _dq("u4_blocked", ints(3, 64, dt="uint4", lo=0, hi=16), _pos(3, 2),
        ints(3, 2, dt="uint4", lo=0, hi=16), axis=1, block_size=32),
]


# ---------------------------------------------------------------------------- fake_quantize

_RANGES = {(-128, 127): "int8", (0, 255): "uint8", (-8, 7): "int4", (0, 15): "uint4"}


def _fake_reference(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, *, qmin: int,
                    qmax: int) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear (per tensor, or per axis for a (C, 1, ...) scale)."""
    to = _RANGES[(qmin, qmax)]
    axis = next((i for i, d in enumerate(scale.shape) if d > 1), None)
    if axis is not None:
        axis += x.ndim - scale.ndim
    s = scale.reshape(-1) if axis is not None else scale.reshape(())
    z = zp.reshape(s.shape).astype(dtype(to).numpy)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis or 0),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis or 0)]
    return onnx_chain(nodes, {"x": x, "s": s, "z": z}, ["y"])[0]


def _fq(label: str, x: Gen, scale: Gen, zp: Gen, qmin: int, qmax: int) -> OpSample:
    return OpSample(ops.fake_quantize, inputs(x, scale, zp), attrs={"qmin": qmin, "qmax": qmax},
                    label=label, reference=_fake_reference, grad=False)


FAKE = [
    _fq("i8", floats(3, 5, lo=-6, hi=6), _const(0.04, "float32"), _const(0.0, "float32"),
        -128, 127),
    _fq("u8_zp", floats(4, 4, lo=-3, hi=9), _const(0.03, "float32"), _const(80.0, "float32"),
        0, 255),
    _fq("i4_ties", _TIES, _const(0.5, "float32"), _const(1.0, "float32"), -8, 7),
    _fq("u4_per_channel", floats(2, 3, 4, lo=-1, hi=1), _pos(3, 1, lo=0.05, hi=0.2),
        fixed([[8.0], [7.0], [9.0]]), 0, 15),
]


# ---------------------------------------------------------------------------- matmul_nbits


def nbits_reference(x: np.ndarray, packed: np.ndarray, scales: np.ndarray,
                    zero_points: np.ndarray | None = None, *, K: int, N: int, bits: int,
                    block_size: int, **_: Any) -> np.ndarray:
    """x @ W^T with every W[n, k] read out of its byte: code j of a block sits in byte
    ``j * bits // 8`` at bit ``(j * bits) % 8`` (low bits first)."""
    n, k = np.meshgrid(np.arange(N), np.arange(K), indexing="ij")
    blk, j = k // block_size, k % block_size
    byte = packed[n, blk, (j * bits) // 8].astype(np.int64)
    code = (byte >> ((j * bits) % 8)) & ((1 << bits) - 1)
    if zero_points is None:
        zp: Any = 2 ** (bits - 1)
    elif zero_points.dtype == np.uint8:
        zbyte = zero_points[n, (blk * bits) // 8].astype(np.int64)
        zp = (zbyte >> ((blk * bits) % 8)) & ((1 << bits) - 1)
    else:
        zp = zero_points[n, blk].astype(np.float64)
    w = (code - zp) * scales[n, blk].astype(np.float64)
    return (x.astype(np.float64) @ w.T).astype(x.dtype)


def _nbits(label: str, x_shape: tuple[int, ...], n: int, bits: int, block: int,
           zp: str = "none", dt: str = "float32") -> OpSample:
    k = x_shape[-1]
    nb = -(-k // block)

    def make(rng: np.random.Generator) -> Arrays:
        z = {"none": None,
             "packed": rng.integers(0, 256, (n, -(-nb * bits // 8))).astype(np.uint8),
             "float": rng.uniform(0, 2**bits, (n, nb)).astype(dtype(dt).numpy)}[zp]
        return [rng.standard_normal(x_shape).astype(dtype(dt).numpy),
                rng.integers(0, 256, (n, nb, block * bits // 8)).astype(np.uint8),
                rng.uniform(0.01, 0.1, (n, nb)).astype(dtype(dt).numpy), z]

    tol = {"rtol": 1e-4, "atol": 1e-4} if dt == "float32" else {"rtol": 2e-2, "atol": 2e-2}
    return OpSample(ops.matmul_nbits, make, label=label, reference=nbits_reference,
                    attrs={"K": k, "N": n, "bits": bits, "block_size": block}, grad=False, **tol)


NBITS = [
    _nbits("q4_default_zp", (3, 64), 5, 4, 32),
    _nbits("q4_packed_zp_padded_k", (2, 2, 40), 3, 4, 16, "packed"),
    _nbits("q4_float_zp", (4, 96), 6, 4, 32, "float"),
    _nbits("q8", (3, 64), 4, 8, 32),
    _nbits("q8_packed_zp", (2, 50), 3, 8, 16, "packed"),
    _nbits("q2_float_zp", (3, 64), 2, 2, 32, "float"),
    _nbits("vector_x", (64,), 4, 4, 32),
    _nbits("f16", (2, 64), 3, 4, 32, dt="float16"),
]


# --------------------------------------------------------------------- dynamic_quant_matmul


def _dynamic_reference(x: np.ndarray, w: np.ndarray, w_scale: np.ndarray,
                       w_zero_point: np.ndarray | None = None,
                       bias: np.ndarray | None = None) -> np.ndarray:
    feeds = {"x": x, "w": w, "s": w_scale}
    names = ["xq", "w", "xz"] + (["wz"] if w_zero_point is not None else [])
    if w_zero_point is not None:
        feeds["wz"] = w_zero_point
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", names, ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=1),
             helper.make_node("Mul", ["xs", "s"], ["m"]),
             helper.make_node("Mul", ["accf", "m"], ["y"])]
    y = onnx_chain(nodes, feeds, ["y"])[0]
    return y + bias if bias is not None else y


def _dyn(label: str, x: Gen, k: int, n: int, wdt: str = "int8", per_column: bool = True,
         zp: bool = False, bias: bool = False) -> OpSample:
    lo, hi = (-128, 128) if wdt == "int8" else (0, 256)
    sshape = (n,) if per_column else ()
    gens = [x, ints(k, n, dt=wdt, lo=lo, hi=hi), _pos(*sshape, lo=0.001, hi=0.01),
            ints(*sshape, dt=wdt, lo=lo // 4, hi=hi // 4) if zp else fixed(0, wdt),
            floats(n) if bias else fixed(0.0)]

    def make(rng: np.random.Generator) -> Arrays:
        arrays: Arrays = [g(rng) for g in gens]
        return [*arrays[:3], arrays[3] if zp else None, arrays[4] if bias else None]

    return OpSample(ops.dynamic_quant_matmul, make, label=label, reference=_dynamic_reference,
                    rtol=1e-5, atol=1e-5, grad=False)


DYNAMIC = [
    _dyn("i8_per_column", floats(4, 32, lo=-3, hi=3), 32, 6),
    _dyn("i8_per_tensor_bias", floats(2, 3, 16, lo=-1, hi=5), 16, 5, per_column=False,
         bias=True),
    _dyn("u8_zp_bias", floats(5, 24, lo=-2, hi=2), 24, 3, wdt="uint8", zp=True, bias=True),
    _dyn("positive_x", floats(3, 16, lo=0.5, hi=4), 16, 4),
]

SAMPLES: list[OpSample] = [*QUANTIZE, *DEQUANTIZE, *FAKE, *NBITS, *DYNAMIC]
