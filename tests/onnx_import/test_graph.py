"""The imported graph's structure: inputs, symbolic dims, params, names, folding, expansion."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from lbdl_graph.backends.numpy import Interpreter, run
from lbdl_graph.frontends.onnx import OnnxUnsupportedError, import_onnx, supported_ops

from .common import F32, check, model, rand, single

I64 = TensorProto.INT64


def _mlp() -> object:
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2"),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1)]
    inits = {"w1": rand(8, 4, seed=1), "b1": rand(8, seed=2), "w2": rand(8, 3, seed=3),
             "unused": rand(5, seed=4)}
    return model(nodes, {"x": (F32, ("batch", 4))}, ["probs"], inits=inits)


def test_symbolic_dims_params_and_node_names() -> None:
    m = _mlp()
    g = import_onnx(m)
    (x,) = g.inputs
    assert x.name == "x" and x.shape == ("batch", 4)
    assert g.outputs[0].name == "probs" and g.outputs[0].shape == ("batch", 3)
    assert sorted(p.name for p in g.params) == ["b1", "w1", "w2"]  # unused one dropped
    assert all(p.trainable for p in g.params)
    names = {n.name for n in g.nodes}
    assert {"fc1", "act", "fc2", "softmax"} <= names
    assert g.node_map["act"].source is not None and g.node_map["act"].source.line == 2
    for batch in (1, 5):
        check(m, {"x": rand(batch, 4)}, rtol=1e-5)


def test_unknown_dims_get_names_and_inputs_that_are_initializers_become_params() -> None:
    node = helper.make_node("Add", ["x", "bias"], ["y"])
    m = model([node], {"x": (F32, (None, 3)), "bias": (F32, (3,))}, ["y"],
              inits={"bias": np.ones(3, np.float32)})
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    g = import_onnx(m)
    assert [v.name for v in g.inputs] == ["x"]
    assert g.inputs[0].shape == ("x_0", 3)
    assert g.param_map["bias"].trainable
    y = Interpreter(g).run({"x": np.zeros((2, 3), np.float32)},
                           params={"bias": np.full(3, 2, np.float32)})
    assert (y["y"] == 2).all()


def test_non_float_and_scalar_initializers_are_buffers() -> None:
    nodes = [helper.make_node("Gather", ["table", "x"], ["e"]),
             helper.make_node("Mul", ["e", "scale"], ["y"])]
    m = model(nodes, {"x": (I64, (2,))}, ["y"],
              inits={"table": rand(5, 3), "scale": np.array(2.0, np.float32)})
    g = import_onnx(m)
    assert g.param_map["table"].trainable
    assert not g.param_map["scale"].trainable  # a rank-0 initializer is a buffer
    check(m, {"x": np.array([4, 0])})


def test_constant_operands_become_attributes_and_shape_chains_fold() -> None:
    # y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])) -- the usual exporter pattern
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="flatten"),
             helper.make_node("Slice", ["y", "st", "en", "ax1"], ["z"], name="slice")]
    inits = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64), "st": np.array([1], np.int64),
             "en": np.array([-1], np.int64), "ax1": np.array([1], np.int64)}
    m = model(nodes, {"x": (F32, (2, 3, 4))}, ["z"], inits=inits)
    g = check(m, {"x": rand(2, 3, 4)})
    assert g.op_counts() == {"reshape": 1, "slice": 1}
    assert dict(g.node_map["flatten"].attrs) == {"shape": (2, -1)}
    assert g.node_map["slice"].attrs["starts"] == (1,)
    assert not g.params


def test_constant_inputs_specialise_shape_operands() -> None:
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    m = model([node], {"x": (F32, (2, 6)), "shape": (I64, (3,))}, ["y"])
    with pytest.raises(OnnxUnsupportedError) as info:
        import_onnx(m)
    assert info.value.needs_constant == ["shape"]
    g = import_onnx(m, constant_inputs={"shape": np.array([3, 2, 2])})
    assert [v.name for v in g.inputs] == ["x"]
    assert run(g, {"x": rand(2, 6)})["y"].shape == (3, 2, 2)


def test_function_ops_are_expanded() -> None:
    # SoftmaxCrossEntropyLoss and CenterCropPad have no handler: their function bodies import
    assert "SoftmaxCrossEntropyLoss" not in supported_ops()
    scores, labels = rand(3, 5), np.array([1, 4, 0], np.int64)
    m = single("SoftmaxCrossEntropyLoss", {"scores": scores, "labels": labels}, 2,
               reduction="mean", opset=18)
    check(m, {"scores": scores, "labels": labels}, rtol=1e-5)
    x = rand(5, 4, 3)
    m = single("CenterCropPad", {"x": x}, inits={"shape": np.array([3, 6], np.int64)},
               axes=[0, 1], opset=18)
    check(m, {"x": x})


def test_old_opsets_are_converted() -> None:
    # opset 11: Squeeze takes axes as an attribute and Softmax coerces to 2-D
    nodes = [helper.make_node("Squeeze", ["x"], ["s"], axes=[1]),
             helper.make_node("Softmax", ["s"], ["y"], axis=1)]
    m = model(nodes, {"x": (F32, (2, 1, 3, 4))}, ["y"], opset=11)
    x = rand(2, 1, 3, 4)
    flat = x.reshape(2, 12)  # (onnx.reference applies the opset-13 Softmax here)
    e = np.exp(flat - flat.max(1, keepdims=True))
    want = (e / e.sum(1, keepdims=True)).reshape(2, 3, 4)
    np.testing.assert_allclose(run(import_onnx(m), {"x": x})["y"], want, rtol=1e-5)


def test_model_from_bytes_and_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = _mlp()
    data = m.SerializeToString()
    (tmp_path / "mlp.onnx").write_bytes(data)
    x = rand(2, 4)
    a = run(import_onnx(data), {"x": x})["probs"]
    b = run(import_onnx(str(tmp_path / "mlp.onnx"), name="mlp"), {"x": x})["probs"]
    np.testing.assert_array_equal(a, b)
    assert import_onnx(tmp_path / "mlp.onnx", name="mlp").name == "mlp"


def test_shape_values_with_symbolic_dims_drive_reshapes() -> None:
    # Reshape(x, Concat(Shape(x)[0:1], Shape(x)[1:2] * 0 + [-1])) on a dynamic batch
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
             helper.make_node("Gather", ["s", "two"], ["seq"], axis=0),
             helper.make_node("Unsqueeze", ["seq", "zero"], ["seq1"]),
             helper.make_node("Concat", ["n", "seq1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="split_heads")]
    inits = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "two": np.array(1, np.int64), "minus1": np.array([-1], np.int64)}
    m = model(nodes, {"x": (F32, ("batch", "seq", 6))}, ["y"], inits=inits)
    g = import_onnx(m)
    assert dict(g.node_map["split_heads"].attrs) == {"shape": (0, 0, 6)}  # -1 inferred
    for batch, seq in ((1, 2), (3, 5)):
        check(m, {"x": rand(batch, seq, 6)})
    # a shape value with symbolic dims used as a tensor is computed at run time
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Add", ["s", "one"], ["y"], name="add_shape")]
    m = model(nodes, {"x": (F32, ("batch", 6))}, ["y"], inits={"one": np.array([1], np.int64)})
    for batch in (1, 4):
        check(m, {"x": rand(batch, 6)})


def test_symbolic_shapes_feed_constant_of_shape_expand_and_range() -> None:
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "two"], ["bs"]),
             helper.make_node("Concat", ["bs", "four"], ["full"], axis=0),
             helper.make_node("Expand", ["bias", "full"], ["e"]),
             helper.make_node("Add", ["x", "e"], ["y"]),
             helper.make_node("ConstantOfShape", ["bs"], ["mask"],
                              value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
             helper.make_node("Gather", ["s", "one"], ["seq"], axis=0),
             helper.make_node("Range", ["start", "seq", "step"], ["pos"])]
    inits = {"zero": np.array([0], np.int64), "two": np.array([2], np.int64),
             "four": np.array([4], np.int64), "one": np.array(1, np.int64),
             "start": np.array(0, np.int64), "step": np.array(1, np.int64),
             "bias": rand(4)}
    m = model(nodes, {"x": (F32, ("batch", "seq", 4))}, ["y", "mask", "pos"], inits=inits)
    g = import_onnx(m)
    assert {v.name: v.shape for v in g.outputs} == {"y": ("batch", "seq", 4),
                                                    "mask": ("batch", "seq"), "pos": ("seq",)}
    for batch, seq in ((1, 3), (2, 5)):
        check(m, {"x": rand(batch, seq, 4)})
