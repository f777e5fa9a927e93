"""ONNX's own backend node test cases for If, Loop and Scan as an oracle: import, run on NumPy,
compare with the expected outputs. Cases on sequences/optionals (not tensors) must be refused
with a typed error naming the node or feature."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import OnnxError
from lbdl_graph.frontends.onnx import import_onnx

# test_scan_sum is opset-8 Scan (batch axis), which the opset converter does not bring to 9+
TENSOR_CASES = ("test_if", "test_scan9_sum", "test_scan9_multi_state")
REFUSED = ("test_if_seq", "test_loop13_seq")


def _cases() -> dict[str, object]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases(None)
                if c.name.startswith(("test_if", "test_loop", "test_scan"))}


@pytest.mark.parametrize("name", TENSOR_CASES)
def test_onnx_node_case(name: str) -> None:
    case = _cases()[name]
    model = case.model  # type: ignore[attr-defined]
    g = import_onnx(model)
    for inputs, outputs in case.data_sets:  # type: ignore[attr-defined]
        feeds = {v.name: np.asarray(a) for v, a in zip(g.inputs, inputs, strict=True)}
        got = list(run(g, feeds).values())
        for a, b in zip(got, outputs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", REFUSED)
def test_sequence_bodies_are_refused_with_a_typed_error(name: str) -> None:
    with pytest.raises(OnnxError):
        import_onnx(_cases()[name].model)  # type: ignore[attr-defined]


def test_loop11_body_with_a_data_dependent_slice_is_refused_naming_the_node() -> None:
    # the body slices with starts computed from the iteration number: Slice with run-time
    # starts is not an IR op yet, so the import refuses it and names the body node
    from lbdl_graph.frontends.onnx import OnnxUnsupportedError

    with pytest.raises(OnnxUnsupportedError, match="Slice_8"):
        import_onnx(_cases()["test_loop11"].model)  # type: ignore[attr-defined]


def test_a_body_reading_a_refused_if_reports_that_if() -> None:
    """An If refused for its branches' types, read by name inside a later If's branch (as the
    expanded AffineGrid function does): the error names the first If, not a missing tensor."""
    from onnx import GraphProto, TensorProto, helper

    from lbdl_graph.frontends.onnx import OnnxUnsupportedError, import_onnx

    def branch(name: str, n: int) -> GraphProto:
        out = helper.make_tensor_value_info(f"{name}_o", TensorProto.INT64, [n])
        node = helper.make_node("Constant", [], [f"{name}_o"], value=helper.make_tensor(
            f"{name}_v", TensorProto.INT64, [n], list(range(n))))
        return helper.make_graph([node], name, [], [out])

    def reader(name: str) -> GraphProto:
        out = helper.make_tensor_value_info(f"{name}_o", TensorProto.INT64, None)
        return helper.make_graph([helper.make_node("Identity", ["a"], [f"{name}_o"])], name,
                                 [], [out])

    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    nodes = [helper.make_node("If", ["c"], ["a"], name="first_if",
                              then_branch=branch("t", 1), else_branch=branch("e", 0)),
             helper.make_node("If", ["c"], ["y"], name="second_if",
                              then_branch=reader("t2"), else_branch=reader("e2"))]
    model = helper.make_model(helper.make_graph(nodes, "g", [c], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(OnnxUnsupportedError, match=r"first_if.*different types"):
        import_onnx(model)


def test_an_if_with_a_constant_condition_is_inlined_even_when_branches_differ() -> None:
    """A condition known at import time picks its branch: the graph has no ``if`` and the
    branches may give different types (here i64[2] and i64[0])."""
    from onnx import TensorProto, helper

    def branch(name: str, vals: list[int]) -> object:
        out = helper.make_tensor_value_info(f"{name}_o", TensorProto.INT64, [len(vals)])
        node = helper.make_node("Constant", [], [f"{name}_o"], value=helper.make_tensor(
            f"{name}_v", TensorProto.INT64, [len(vals)], vals))
        return helper.make_graph([node], name, [], [out])

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["r"]),
             helper.make_node("Constant", [], ["two"], value=helper.make_tensor(
                 "two", TensorProto.INT64, [], [2])),
             helper.make_node("Equal", ["r", "two"], ["c"]),
             helper.make_node("If", ["c"], ["shape"], name="pick",
                              then_branch=branch("t", [3, 2]), else_branch=branch("e", [])),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    g = import_onnx(model)
    assert all(n.op.name != "if" for n in g.nodes)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run(g, {"x": a})["y"], a.reshape(3, 2))


@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 3, 2, 4, 5]])
def test_a_function_body_with_control_flow_expands(size: list[int]) -> None:
    """AffineGrid has no handler; its function body branches (If) on 2-D vs 3-D and imports,
    matching onnx.reference."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    k = len(size) - 2
    theta = np.random.default_rng(0).standard_normal((size[0], k, k + 1)).astype(np.float32)
    t = helper.make_tensor_value_info("theta", TensorProto.FLOAT, list(theta.shape))
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, None)
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=1)
    model = helper.make_model(
        helper.make_graph([node], "g", [t], [grid],
                          [numpy_helper.from_array(np.array(size, np.int64), "size")]),
        opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    want = ReferenceEvaluator(model).run(None, {"theta": theta})[0]
    got = run(import_onnx(model), {"theta": theta})["grid"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
