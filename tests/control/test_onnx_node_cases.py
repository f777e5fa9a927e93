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
