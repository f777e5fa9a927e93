"""The importer, op family by op family, against onnx.reference on hand-built models."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends.onnx import import_onnx

from .common import F32, check, model, rand, single

I64 = np.int64


@pytest.mark.parametrize("op", ["Abs", "Neg", "Exp", "Sqrt", "Sin", "Cos", "Tanh", "Sigmoid",
                                "Relu", "Erf", "Softplus", "Floor", "Ceil", "Round", "Sign",
                                "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softsign",
                                "Mish", "Tan", "Sinh", "Cosh", "Asinh", "Atanh", "Identity"])
def test_unary(op: str) -> None:
    x = np.clip(rand(3, 4), -0.9, 0.9)
    if op == "Sqrt":
        x = np.abs(x)
    check(single(op, {"x": x}), {"x": x})


@pytest.mark.parametrize(("op", "attrs"), [("LeakyRelu", {"alpha": 0.2}), ("Gelu", {}),
                                           ("Gelu", {"approximate": "tanh"}),
                                           ("ThresholdedRelu", {"alpha": 0.3}),
                                           ("Shrink", {"lambd": 0.4, "bias": 0.1}),
                                           ("Swish", {"alpha": 1.5})])
def test_activations_with_attributes(op: str, attrs: dict) -> None:
    x = rand(2, 5)
    check(single(op, {"x": x}, opset=24 if op == "Swish" else 21, **attrs), {"x": x})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less",
                                "LessOrEqual", "Greater", "GreaterOrEqual", "PRelu"])
def test_binary_with_broadcasting(op: str) -> None:
    a, b = np.abs(rand(2, 3, 4)) + 0.5, rand(4, seed=1)
    check(single(op, {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic(op: str) -> None:
    xs = {f"x{i}": rand(2, 3, seed=i) for i in range(3)}
    check(single(op, xs), xs)


@pytest.mark.parametrize(("dtype", "fmod"), [(np.int32, 0), (np.int64, 1), (np.float32, 1),
                                             (np.float32, 0)])
def test_mod(dtype: type, fmod: int) -> None:
    a = np.array([-7, 7, -4, 5, 0, 9], dtype=dtype)
    b = np.array([3, -3, 2, 5, 3, -2], dtype=dtype)
    check(single("Mod", {"a": a, "b": b}, fmod=fmod), {"a": a, "b": b})


def test_logic_bitwise_where_cast() -> None:
    a, b = rand(3, 4) > 0, rand(3, 4, seed=1) > 0
    for op in ("And", "Or", "Xor"):
        check(single(op, {"a": a, "b": b}), {"a": a, "b": b})
    check(single("Not", {"a": a}), {"a": a})
    i, j = np.arange(12, dtype=np.int32).reshape(3, 4), np.full((4,), 6, np.int32)
    for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
        check(single(op, {"i": i, "j": j}), {"i": i, "j": j})
    check(single("BitwiseNot", {"i": i}), {"i": i})
    x, y = rand(3, 4), rand(3, 4, seed=2)
    check(single("Where", {"a": a, "x": x, "y": y}), {"a": a, "x": x, "y": y})
    check(single("Cast", {"x": x}, to=TensorProto.INT32), {"x": x * 10})
    check(single("CastLike", {"x": x, "i": i}), {"x": x * 10, "i": i})


def test_clip_constant_and_dynamic_bounds() -> None:
    x = rand(4, 5)
    lo, hi = np.array(-0.5, np.float32), np.array(0.7, np.float32)
    g = check(single("Clip", {"x": x}, inits={"lo": lo, "hi": hi}), {"x": x})
    assert g.op_counts() == {"clip": 1}  # constant bounds became attributes
    g = check(single("Clip", {"x": x, "lo": lo, "hi": hi}), {"x": x, "lo": lo, "hi": hi})
    assert "maximum" in g.op_counts()


@pytest.mark.parametrize(("op", "kw"), [("ReduceSum", {}), ("ReduceMean", {"keepdims": 0}),
                                        ("ReduceMax", {}), ("ReduceMin", {"keepdims": 0}),
                                        ("ReduceProd", {}), ("ReduceL1", {}), ("ReduceL2", {}),
                                        ("ReduceSumSquare", {}), ("ReduceLogSumExp", {}),
                                        ("ReduceLogSum", {"keepdims": 0})])
def test_reductions(op: str, kw: dict) -> None:
    x = np.abs(rand(2, 3, 4)) + 0.1
    check(single(op, {"x": x}, inits={"axes": np.array([1, -1], I64)}, opset=18, **kw),
          {"x": x})
    check(single(op, {"x": x}, opset=18, **kw), {"x": x})  # all axes


def test_arg_softmax_cumsum_topk_hardmax() -> None:
    x = rand(3, 5)
    x[0, 1] = x[0, 3] = 5.0  # a tie
    for op in ("ArgMax", "ArgMin"):
        check(single(op, {"x": x}, axis=1, keepdims=0), {"x": x})
        check(single(op, {"x": x}, axis=1, select_last_index=1), {"x": x})
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        check(single(op, {"x": x}, axis=0), {"x": x})
    check(single("CumSum", {"x": x}, inits={"axis": np.array(1, I64)}, exclusive=1, reverse=1),
          {"x": x})
    check(single("CumProd", {"x": x}, inits={"axis": np.array(1, I64)}, opset=26), {"x": x})
    check(single("TopK", {"x": x}, 2, inits={"k": np.array([3], I64)}, axis=1), {"x": x})
    check(single("TopK", {"x": x}, 2, inits={"k": np.array([2], I64)}, largest=0), {"x": x})


def test_gemm_matmul_einsum() -> None:
    a, b, c = rand(4, 3), rand(5, 4, seed=1), rand(5, seed=2)
    check(single("Gemm", {"a": a, "b": b, "c": c}, alpha=0.5, beta=2.0, transA=1, transB=1),
          {"a": a, "b": b, "c": c})
    check(single("MatMul", {"a": rand(2, 3, 4), "b": rand(4, 6)}),
          {"a": rand(2, 3, 4), "b": rand(4, 6)})
    for eq, shapes in [("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij->ji", [(3, 4)]),
                       ("...ij,...jk", [(2, 3, 4), (4, 2)]), ("i,i", [(5,), (5,)])]:
        feeds = {f"x{i}": rand(*s, seed=i) for i, s in enumerate(shapes)}
        check(single("Einsum", feeds, equation=eq, opset=12), feeds, rtol=1e-4)


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 2], "pads": [1, 0, 2, 1]},
                                   {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                                   {"auto_pad": "SAME_LOWER", "dilations": [2, 2]},
                                   {"group": 2}])
def test_conv(attrs: dict) -> None:
    x, w, b = rand(1, 4, 7, 6), rand(6, 4 // attrs.get("group", 1), 3, 3, seed=1), rand(6)
    check(single("Conv", {"x": x}, inits={"w": w, "b": b}, **attrs), {"x": x}, rtol=1e-4)


@pytest.mark.parametrize("attrs", [{"strides": [2, 2]}, {"strides": [2, 2],
                                                          "output_padding": [1, 1]},
                                   {"strides": [2, 2], "output_shape": [9, 9]},
                                   {"auto_pad": "SAME_UPPER", "strides": [2, 2]}])
def test_conv_transpose(attrs: dict) -> None:
    x, w = rand(1, 2, 4, 4), rand(2, 3, 3, 3, seed=1)
    check(single("ConvTranspose", {"x": x}, inits={"w": w}, **attrs), {"x": x}, rtol=1e-4)


@pytest.mark.parametrize(("op", "attrs"), [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "ceil_mode": 0}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "dilations": [2, 2], "ceil_mode": 1,
                     "strides": [2, 2]}),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
    ("LRN", {"size": 3, "alpha": 0.01, "beta": 0.5})])
def test_pooling(op: str, attrs: dict) -> None:
    # N == C: onnx.reference's LRN loops over range(N) where it means channels
    x = rand(3, 3, 7, 7)
    check(single(op, {"x": x}, **attrs), {"x": x}, rtol=1e-4)


def test_max_pool_indices_and_unpool() -> None:
    x = rand(1, 2, 4, 4)
    pool = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["y", "i"], ["z"], kernel_shape=[2, 2],
                              strides=[2, 2])
    check(model([pool, unpool], {"x": (F32, x.shape)}, ["y", "i", "z"]), {"x": x})


def test_normalizations() -> None:
    x = rand(2, 4, 3, 3)
    c = {k: rand(4, seed=i) for i, k in enumerate(("s", "b", "m"))}
    c["v"] = np.abs(rand(4, seed=5)) + 0.5
    check(single("BatchNormalization", {"x": x}, inits=c, epsilon=1e-3), {"x": x}, rtol=1e-4)
    check(single("InstanceNormalization", {"x": x}, inits={"s": c["s"], "b": c["b"]}), {"x": x},
          rtol=1e-4)
    check(single("GroupNormalization", {"x": x}, inits={"s": c["s"], "b": c["b"]},
                 num_groups=2), {"x": x}, rtol=1e-4)
    sc, bi = rand(3, 3, seed=6), rand(3, 3, seed=7)
    check(single("LayerNormalization", {"x": x}, 3, inits={"s": sc, "b": bi}, axis=-2,
                 opset=17), {"x": x}, rtol=1e-4)
    check(single("LayerNormalization", {"x": x}, inits={"s": sc}, axis=2, opset=17), {"x": x},
          rtol=1e-4)
    check(single("RMSNormalization", {"x": x}, inits={"s": rand(3, seed=8)}, opset=23),
          {"x": x}, rtol=1e-4)
    check(single("LpNormalization", {"x": x}, axis=1, p=2), {"x": x}, rtol=1e-4)
    # p=1 follows the specification (sum of |x|); onnx.reference sums x without the abs
    y = run(import_onnx(single("LpNormalization", {"x": x}, axis=1, p=1)), {"x": x})["y0"]
    np.testing.assert_allclose(y, x / np.abs(x).sum(1, keepdims=True), rtol=1e-5)
    check(single("MeanVarianceNormalization", {"x": x}), {"x": x}, rtol=1e-4)


def test_dropout_inference_is_identity_with_mask() -> None:
    x = rand(3, 4)
    g = check(single("Dropout", {"x": x}, 2, inits={"ratio": np.array(0.3, np.float32)}),
              {"x": x})
    assert "dropout" not in g.op_counts()


def _recurrent(op: str, seq: int, lens: np.ndarray | None) -> tuple:
    batch, inp, hid, gates = 3, 2, 5, {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    w = rand(2, gates * hid, inp, seed=1) * 0.5
    r = rand(2, gates * hid, hid, seed=2) * 0.5
    b = rand(2, 2 * gates * hid, seed=3) * 0.1
    names = ["x", "w", "r", "b"] + (["lens"] if lens is not None else [])
    node = helper.make_node(op, names, ["y", "yh"], hidden_size=hid, direction="bidirectional",
                            linear_before_reset=1 if op == "GRU" else None)
    ins = {"x": (F32, (seq, batch, inp))}
    if lens is not None:
        ins["lens"] = (TensorProto.INT32, lens.shape)
    return model([node], ins, ["y", "yh"], inits={"w": w, "r": r, "b": b}), rand(seq, batch,
                                                                               inp)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_layers(op: str) -> None:
    m, x = _recurrent(op, 4, None)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)
    # sequence_lens (which onnx.reference ignores): each batch entry must equal a run on its own
    # prefix, with zeros after its end
    lens = np.array([4, 2, 3], np.int32)
    m, _ = _recurrent(op, 4, lens)
    got = run(import_onnx(m), {"x": x, "lens": lens})
    for bi, n in enumerate(lens):
        ref_m, _ = _recurrent(op, int(n), None)
        want = run(import_onnx(ref_m), {"x": x[:n]})
        np.testing.assert_allclose(got["y"][:n, :, bi], want["y"][:, :, bi], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(got["yh"][:, bi], want["yh"][:, bi], rtol=1e-5, atol=1e-6)
        assert not got["y"][n:, :, bi].any()


@pytest.mark.parametrize("attrs", [
    {"mode": "nearest"}, {"mode": "linear"},
    {"mode": "cubic", "coordinate_transformation_mode": "align_corners"},
    {"mode": "linear", "antialias": 1},
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}])
def test_resize(attrs: dict) -> None:
    x = rand(1, 2, 4, 5)
    for scales in ([1, 1, 2.0, 1.5], [1, 1, 0.5, 0.6]):
        m = single("Resize", {"x": x}, inits={"roi": np.zeros(0, np.float32),
                                                "scales": np.array(scales, np.float32)},
                   **attrs)
        check(m, {"x": x}, rtol=1e-4, atol=1e-5)
