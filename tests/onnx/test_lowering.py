"""Every op sample exported to ONNX, checked, run on ONNX Runtime and compared with NumPy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx
import pytest

from lbdl_graph import OPS, GraphBuilder, OnnxError, OpError, ops
from lbdl_graph.backends.numpy import KERNELS, Interpreter
from lbdl_graph.backends.onnx import LOWERINGS, OrtRunner, to_onnx
from lbdl_graph.dtypes import dtype
from lbdl_graph.graph import Graph
from lbdl_graph.opdef import Trait
from tests.op_db import OP_DB, OpSample

RANDOM = {ops.random_uniform, ops.random_normal, ops.dropout}


def one_node_graph(s: OpSample, args: list[np.ndarray | None]) -> Graph:
    """A graph whose inputs are the sample's arrays and whose outputs are the op's results."""
    b = GraphBuilder(s.op.name)
    ins = [b.input(f"in{i}", dtype(a.dtype), a.shape) if a is not None else None
           for i, a in enumerate(args)]
    with b:
        out = s.op(*ins, **s.attrs)
    return b.build(list(out) if isinstance(out, tuple) else [out])


def feeds_of(args: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """The graph inputs of :func:`one_node_graph`."""
    return {f"in{i}": a for i, a in enumerate(args) if a is not None}


def check_model(m: onnx.ModelProto) -> None:
    """The full checker and strict shape inference with type checks."""
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True, check_type=True)


def compare(s: OpSample, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """ORT vs NumPy: exact for random ops and non-float results, else the sample's tolerance."""
    assert list(got) == list(want)
    for name, w in want.items():
        g, w = got[name], np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, (name, g.dtype, g.shape, w.dtype,
                                                           w.shape)
        if s.op is ops.random_normal:  # log, sqrt and cos are not bit-exact across libraries
            eps = float(np.finfo(w.dtype).eps) if w.dtype.kind == "f" else 2.0**-7
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64),
                                       rtol=8 * eps, atol=16 * eps, err_msg=name)
        elif s.op in RANDOM or g.dtype.kind not in "fc":
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g, w, rtol=s.rtol, atol=s.atol, err_msg=name)


def numpy_outputs(s: OpSample, g: Graph, args: list[np.ndarray | None]) -> dict[str, Any]:
    """The op's NumPy kernel run directly on the sample (its decomposition if it has none)."""
    kernel = KERNELS.get(s.op)
    if kernel is None:
        return Interpreter(g).run(feeds_of(args))
    out = kernel(*args, **s.op.check_attrs(s.attrs))
    outs = out if isinstance(out, tuple) else (out,)
    return dict(zip(g.output_names(), outs, strict=True))


def reduced_precision(m: onnx.ModelProto) -> bool:
    """True if the "ort" target computed some float64 op in float32 (ORT has no kernel)."""
    inserted = [n for n in m.graph.node if n.op_type == "Cast" and not any(
        p.key == "lbdl.op" and p.value == "cast" for p in n.metadata_props)]
    return any(a.i == onnx.TensorProto.FLOAT for n in inserted for a in n.attribute)


def export_and_run(s: OpSample, **options: Any) -> None:
    """Export a one-node graph of ``s``, check the model, run it and compare with NumPy."""
    args = s.make(np.random.default_rng(0))
    g = one_node_graph(s, args)
    m = to_onnx(g, **options)
    check_model(m)
    got = OrtRunner(m, providers="cpu").run(feeds_of(args))
    want = numpy_outputs(s, g, args)
    if reduced_precision(m) and any(np.asarray(w).dtype == np.float64 for w in want.values()):
        s = replace(s, rtol=max(s.rtol, 1e-5), atol=max(s.atol, 1e-5))
    compare(s, got, want)


def test_every_op_has_a_lowering() -> None:
    assert LOWERINGS.missing() == []
    # the random ops go through their decomposition, never an ONNX random op
    inlined = set(LOWERINGS.missing(allow_decompose=False))
    assert {op.name for op in RANDOM} <= inlined
    assert all(OPS[name].decompose is not None for name in inlined)


@pytest.mark.parametrize("s", OP_DB, ids=lambda s: s.id)
def test_onnx_runtime_matches_numpy(s: OpSample) -> None:
    export_and_run(s)


@pytest.mark.parametrize("opset", [17, 26])
@pytest.mark.parametrize("s", OP_DB, ids=lambda s: s.id)
def test_other_opsets(s: OpSample, opset: int) -> None:
    try:
        export_and_run(s, opset=opset)
    except OnnxError as e:
        if "opset >=" not in e.message:
            raise
        pytest.skip(e.message)  # e.g. scatter max/min or 4-bit types before they existed


@pytest.mark.parametrize("s", OP_DB, ids=lambda s: s.id)
def test_portable_target(s: OpSample) -> None:
    """Plain ONNX, no casts for ORT's gaps: always valid; run where ORT has the kernels."""
    try:
        export_and_run(s, target="portable")
    except OnnxError as e:
        if "lowers only to ONNX Runtime" in e.message:
            pytest.skip("an ONNX Runtime fast-path op with no standard-ops form")
        if "Could not find an implementation" not in e.message:
            raise
        pytest.skip("ONNX Runtime's CPU provider has no kernel for this op and dtype")


@pytest.mark.parametrize("s", [s for s in OP_DB if s.op.has(Trait.STOCHASTIC)], ids=lambda s: s.id)
def test_random_ops_lower_to_standard_integer_ops(s: OpSample) -> None:
    m = to_onnx(one_node_graph(s, s.make(np.random.default_rng(0))))
    kinds = {n.op_type for n in m.graph.node}
    assert not {k for k in kinds if k.startswith("Random") or k in ("Dropout", "Bernoulli")}
    assert {"BitwiseXor", "BitwiseAnd", "Mul", "Div"} <= kinds


def test_dropout_in_evaluation_mode_is_identity() -> None:
    b = GraphBuilder("drop")
    x, key = b.input("x", "f32", ["N", 4]), b.input("key", "i64", [2])
    with b:
        y = ops.dropout(x, key, ratio=0.5)
    m = to_onnx(b.build([y]), training=False)
    assert [n.op_type for n in m.graph.node] == ["Identity"]
    xs = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    out = OrtRunner(m, providers="cpu").run({"x": xs, "key": np.array([1, 2])})
    np.testing.assert_array_equal(out["dropout"], xs)


def _softplus_f64() -> Graph:
    b = GraphBuilder("sp")
    x = b.input("x", "f64", [5])
    with b:
        y = ops.softplus(x)
    return b.build([y])


def test_ort_target_casts_around_missing_kernels() -> None:
    g = _softplus_f64()  # ORT's CPU Softplus has no float64 kernel
    ort_kinds = [n.op_type for n in to_onnx(g, target="ort").graph.node]
    assert ort_kinds.count("Cast") == 2 and "Softplus" in ort_kinds
    assert [n.op_type for n in to_onnx(g, target="portable").graph.node] == ["Softplus"]
    xs = np.linspace(-3, 3, 5)
    out = OrtRunner(g, providers="cpu").run({"x": xs})["softplus"]
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.log1p(np.exp(xs)), rtol=1e-6)


def test_lowering_error_names_the_node() -> None:
    b = GraphBuilder("scatter")
    d, i = b.input("d", "f32", [4]), b.input("i", "i64", [2])
    u = b.input("u", "f32", [2])
    with b:
        y = ops.scatter_elements(d, i, u, reduction="max", name="scat")
    with pytest.raises(Exception) as info:
        to_onnx(b.build([y]), opset=17)
    assert info.value.node == "scat" and "opset >= 18" in str(info.value)
    assert not isinstance(info.value, OpError)


@pytest.mark.parametrize("target", ["ort", "portable"])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("zero_points", ["none", "packed", "float"])
def test_matmul_nbits_targets(target: str, bits: int, zero_points: str) -> None:
    rng = np.random.default_rng(bits)
    k, n, block = 40, 3, 16
    nb = -(-k // block)
    packed = rng.integers(0, 256, (n, nb, block * bits // 8)).astype(np.uint8)
    scales = rng.random((n, nb)).astype(np.float32)
    zp = {"none": None, "float": (rng.random((n, nb)) * 4).astype(np.float32),
          "packed": rng.integers(0, 256, (n, -(-nb * bits // 8))).astype(np.uint8)}[zero_points]
    s = OpSample(ops.matmul_nbits, lambda _: [rng.standard_normal((2, 5, k)).astype(np.float32),
                                             packed, scales, zp],
                 attrs={"K": k, "N": n, "bits": bits, "block_size": block}, rtol=1e-5,
                 atol=1e-4)
    export_and_run(s, target=target)
    kinds = {n.op_type for n in to_onnx(one_node_graph(s, s.make(rng)), target=target).graph.node}
    contrib = target == "ort" and not (bits == 8 and zero_points == "float")
    assert ("MatMulNBits" in kinds) == contrib
