"""The quantisation ops: NumPy kernels round exactly like ONNX Runtime, shape rules reject
what does not fit, and fake_quantize's gradient is straight-through."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, to_onnx
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import DTypeError, ShapeError
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad
from tests.samples.quant import nbits_reference

F32 = np.float32
RNG = np.random.default_rng(0)


def _data(shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Random values plus saturating values and a zero (the caller adds ties)."""
    x = (RNG.standard_normal(shape) * 60 * scale).astype(F32)
    flat = x.reshape(-1)
    flat[6:9] = np.array([1e6, -1e6, 0.0], F32)
    return x


# (label, x shape, scale shape, axis, block_size)
LAYOUTS = [("tensor", (6, 64), (), 1, 0), ("axis1", (6, 64), (64,), 1, 0),
           ("axis0", (6, 64), (6,), 0, 0), ("blocked", (6, 64), (6, 4), 1, 16),
           ("blocked_partial", (6, 64), (6, 3), 1, 24), ("blocked_axis0", (64, 5), (2, 5), 0, 32)]


def _graph(build: Any, name: str) -> Graph:
    b = GraphBuilder(name)
    with b:
        out = build(b)
    return b.build(out if isinstance(out, dict) else {"y": out})


@pytest.mark.parametrize("to", ["int8", "uint8", "int4", "uint4"])
@pytest.mark.parametrize(("label", "xs", "ss", "axis", "block"), LAYOUTS,
                         ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("with_zp", [True, False], ids=["zp", "no_zp"])
def test_quantize_dequantize_match_onnx_runtime_exactly(to: str, label: str, xs: tuple[int, ...],
                                                       ss: tuple[int, ...], axis: int,
                                                       block: int, with_zp: bool) -> None:
    dt = dtype(to)
    lo, hi = (-(2 ** (dt.bits - 1)), 2 ** (dt.bits - 1)) if dt.kind == "int" else (0, 2**dt.bits)
    scale = np.full(ss, 0.1, F32) if label == "tensor" else RNG.uniform(0.05, 0.2, ss).astype(F32)
    scale.reshape(-1)[:1] = 0.1  # the ties in _data are exact halves of this scale
    zp = RNG.integers(lo // 2, hi // 2, ss).astype(dt.numpy) if with_zp else None
    x = _data(xs, 0.1)
    x *= F32(2 ** dt.bits / 256)  # a range that also saturates 4-bit codes
    x.reshape(-1)[:6] = np.array([0.05, 0.15, 0.25, -0.05, -0.15, -0.25], F32)

    def build(b: GraphBuilder) -> dict[str, Any]:
        xv = b.input("x", "f32", xs)
        s = b.param("s", scale)
        z = b.param("z", zp) if zp is not None else None
        q = ops.quantize_linear(xv, s, z, axis=axis, block_size=block, to=to)
        return {"q": q, "d": ops.dequantize_linear(q, s, z, axis=axis, block_size=block)}

    g = _graph(build, "qdq")
    want = Interpreter(g).run({"x": x})
    got = OrtRunner(g, providers="cpu").run({"x": x})
    assert want["q"].dtype == dt.numpy
    np.testing.assert_array_equal(got["q"].astype(np.int32), want["q"].astype(np.int32))
    np.testing.assert_array_equal(got["d"], want["d"])
    assert int(want["q"].astype(np.int32).max()) == hi - 1  # saturated
    if label == "tensor":  # x / scale = 0.5, 1.5, 2.5, -0.5, -1.5, -2.5 round half to even
        z = int(zp) if zp is not None else 0
        np.testing.assert_array_equal(want["q"].astype(np.int32).reshape(-1)[:6],
                                      np.clip(np.array([0, 2, 2, 0, -2, -2]) + z, lo, hi - 1))


def test_float16_and_nan() -> None:
    x = np.array([[0.25, 0.75, -0.25, 3.0, np.nan, 1e4]], np.float16)

    def build(b: GraphBuilder) -> Any:
        s = b.param("s", np.float16(0.5))
        return ops.quantize_linear(b.input("x", "f16", [1, 6]), s, to="int8")

    g = _graph(build, "f16")
    want = Interpreter(g).run({"x": x})["y"]
    np.testing.assert_array_equal(want, [[0, 2, 0, 6, -128, 127]])  # NaN -> lowest, like MLAS
    np.testing.assert_array_equal(OrtRunner(g, providers="cpu").run({"x": x})["y"], want)


@pytest.mark.parametrize("target", ["ort", "portable"])
@pytest.mark.parametrize(("bits", "zp"), [(4, "none"), (4, "float"), (4, "packed"), (8, "none"),
                                          (2, "packed")])
def test_matmul_nbits_numpy_vs_onnx_runtime(target: str, bits: int, zp: str) -> None:
    k, n, block = 72, 5, 32
    nb = -(-k // block)
    packed = RNG.integers(0, 256, (n, nb, block * bits // 8)).astype(np.uint8)
    scales = RNG.uniform(0.01, 0.1, (n, nb)).astype(F32)
    zps = {"none": None, "float": RNG.uniform(0, 2**bits, (n, nb)).astype(F32),
           "packed": RNG.integers(0, 256, (n, -(-nb * bits // 8))).astype(np.uint8)}[zp]
    x = RNG.standard_normal((2, 3, k)).astype(F32)

    def build(b: GraphBuilder) -> Any:
        z = b.param("z", zps) if zps is not None else None
        return ops.matmul_nbits(b.input("x", "f32", [2, 3, k]), b.param("w", packed),
                                b.param("s", scales), z, K=k, N=n, bits=bits, block_size=block)

    g = _graph(build, "nbits")
    want = Interpreter(g).run({"x": x})["y"]
    np.testing.assert_allclose(want, nbits_reference(x, packed, scales, zps, K=k, N=n, bits=bits,
                                                     block_size=block), rtol=1e-4, atol=1e-4)
    got = OrtRunner(g, providers="cpu", target=target).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    model = to_onnx(g, target=target)
    contrib = {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}
    assert contrib == ({"MatMulNBits"} if target == "ort" else set())


@pytest.mark.parametrize("target", ["ort", "portable"])
def test_dynamic_quant_matmul_is_exact_where_int8_pairs_would_saturate(target: str) -> None:
    # x quantises to 255 everywhere and w is +-127: each pair of uint8 x int8 products sums to
    # +-64770, past int16, which ORT's kernels on CPUs without VNNI saturate; uint8 weights do not
    k, n = 64, 4
    w = np.where(np.arange(k * n).reshape(k, n) % 3 == 0, -127, 127).astype(np.int8)
    s = np.full(n, 0.01, np.float32)
    x = np.full((2, k), 5.0, np.float32)
    x[:, 0] = 0.0  # range [0, 5]: zero point 0, every other entry -> 255

    def build(b: GraphBuilder) -> Any:
        return ops.dynamic_quant_matmul(b.input("x", "f32", ["B", k]), b.param("w", w),
                                        b.param("s", s), None, None)

    g = _graph(build, "sat")
    want = Interpreter(g).run({"x": x})["y"]
    np.testing.assert_allclose(want, x @ (w * s), rtol=1e-5, atol=1e-3)
    got = OrtRunner(g, providers="cpu", target=target).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    model = to_onnx(g, target=target)
    matmul = next(nd for nd in model.graph.node
                  if nd.op_type in ("DynamicQuantizeMatMul", "MatMulInteger"))
    cast = next(nd for nd in model.graph.node if matmul.input[1] in nd.output)
    assert cast.op_type == "Cast" and cast.attribute[0].i == 2  # TensorProto.UINT8


@pytest.mark.parametrize("target", ["ort", "portable"])
def test_dynamic_quant_matmul_numpy_vs_onnx_runtime(target: str) -> None:
    k, n = 48, 7
    w = RNG.integers(-127, 128, (k, n)).astype(np.int8)
    s = RNG.uniform(0.001, 0.01, n).astype(F32)
    bias = RNG.standard_normal(n).astype(F32)
    x = (RNG.standard_normal((4, k)) * 3 + 1).astype(F32)

    def build(b: GraphBuilder) -> Any:
        return ops.dynamic_quant_matmul(b.input("x", "f32", ["B", k]), b.param("w", w),
                                        b.param("s", s), None, b.param("b", bias))

    g = _graph(build, "dyn")
    want = Interpreter(g).run({"x": x})["y"]
    got = OrtRunner(g, providers="cpu", target=target).run({"x": x})["y"]
    # exact with VNNI; plain AVX2 u8 x s8 kernels may saturate 16-bit pair sums
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(want, x @ (w * s) + bias, rtol=0.05, atol=0.05 * np.abs(
        want).max())


def test_fake_quantize_matches_onnx_runtime_and_has_a_straight_through_gradient() -> None:
    x = np.array([-1.3, -0.26, -0.25, 0.1, 0.75, 0.9, 2.0], F32)

    def build(b: GraphBuilder) -> Any:
        xv = b.param("x", x)
        y = ops.fake_quantize(xv, b.constant(np.float32(0.5)), b.constant(np.float32(1.0)),
                              qmin=0, qmax=3)
        return {"y": y, "loss": ops.reduce_sum(ops.mul(y, b.constant(np.arange(7, dtype=F32))),
                                               keepdims=False)}

    g = _graph(build, "fq")
    out = Interpreter(g).run({})
    # codes round(x / 0.5) + 1 = [-2, 0, 1, 1, 3, 3, 5] (-0.52 -> -1, 1.5 -> 2), clipped to 0..3
    np.testing.assert_array_equal(out["y"], [-0.5, -0.5, 0.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(OrtRunner(g, providers="cpu").run({})["y"], out["y"])
    gx = Interpreter(grad(g, "loss", ["x"])).run({})["grad:x"]
    # inside the range (codes 0..3 before clipping) the gradient passes, outside it is 0
    np.testing.assert_array_equal(gx, [0, 1, 2, 3, 4, 5, 0])


def test_shape_rules_name_what_does_not_fit() -> None:
    b = GraphBuilder("bad")
    x = b.input("x", "f32", [4, 64])
    with b:
        with pytest.raises(ShapeError, match=r"blocked scale f32\[4,3\] should be \[4,2\]"):
            ops.quantize_linear(x, b.param("s", np.ones((4, 3), F32)), axis=1, block_size=32)
        with pytest.raises(ShapeError, match="per-axis scale"):
            ops.quantize_linear(x, b.param("s2", np.ones(5, F32)), axis=1)
        with pytest.raises(DTypeError, match="cannot quantise to int32"):
            ops.quantize_linear(x, b.param("s3", F32(1)), to="int32")
        with pytest.raises(DTypeError, match="differs from zero_point"):
            ops.quantize_linear(x, b.param("s4", F32(1)), b.param("z4", np.int8(0)), to="uint8")
        with pytest.raises(ShapeError, match=r"packed weight u8\[3,2,16\] should be u8\[3,2,32\]"):
            ops.matmul_nbits(x, b.param("p", np.zeros((3, 2, 16), np.uint8)),
                             b.param("sc", np.ones((3, 2), F32)), K=64, N=3, bits=8)
        with pytest.raises(ShapeError, match="block_size must be a power of 2"):
            ops.matmul_nbits(x, b.param("p2", np.zeros((3, 3, 12), np.uint8)),
                             b.param("sc2", np.ones((3, 3), F32)), K=64, N=3, block_size=24)
