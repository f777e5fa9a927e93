"""Every op sample: shape rule vs kernel output, and kernel vs an independent oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from lbdl_graph.backends.numpy import KERNELS
from lbdl_graph.dtypes import dtype
from lbdl_graph.types import tensor_type
from tests.op_db import OP_DB, OpSample


def run_kernel(s: OpSample, args: list[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    """Run the op's NumPy kernel directly (no graph) and return its outputs as a tuple."""
    attrs = s.op.check_attrs(s.attrs)
    out = KERNELS[s.op](*args, **attrs)
    return out if isinstance(out, tuple) else (out,)


def run_oracle(s: OpSample, args: list[np.ndarray | None]) -> tuple[Any, ...]:
    """The expected outputs from the ONNX reference evaluator or the sample's formula."""
    if s.reference is not None:
        out = s.reference(*args, **s.op.check_attrs(s.attrs))
        return out if isinstance(out, tuple) else (out,)
    assert s.onnx_op is not None, f"sample {s.id} has no oracle"
    onnx_args = s.onnx_inputs(args) if s.onnx_inputs else args
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(onnx_args)]
    n_out = s.op.num_outputs(s.op.check_attrs(s.attrs))
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(s.onnx_op, names, outs, **s.onnx_attrs)
    graph = helper.make_graph(
        [node], "oracle",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in zip(names, onnx_args, strict=True) if a is not None],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", s.onnx_opset)])
    feeds = {n: a for n, a in zip(names, onnx_args, strict=True) if a is not None}
    return tuple(ReferenceEvaluator(model).run(None, feeds))


@pytest.mark.parametrize("s", OP_DB, ids=lambda s: s.id)
def test_shape_rule_matches_kernel(s: OpSample) -> None:
    args = s.make(np.random.default_rng(0))
    types = [tensor_type(dtype(a.dtype), a.shape) if a is not None else None for a in args]
    expected = s.op.infer_types(types, s.op.check_attrs(s.attrs))
    got = run_kernel(s, args)
    assert len(got) == len(expected)
    for g, t in zip(got, expected, strict=True):
        assert isinstance(g, np.ndarray), f"kernel returned {type(g).__name__}"
        assert g.dtype == t.dtype.numpy, f"kernel dtype {g.dtype}, rule {t.dtype}"
        assert list(g.shape) == list(t.shape)


@pytest.mark.parametrize("s", OP_DB, ids=lambda s: s.id)
def test_kernel_matches_oracle(s: OpSample) -> None:
    args = s.make(np.random.default_rng(0))
    got = run_kernel(s, args)
    want = run_oracle(s, args)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        w = np.asarray(w)
        assert g.shape == w.shape
        if g.dtype.kind in "fc":
            np.testing.assert_allclose(g, w.astype(g.dtype), rtol=s.rtol, atol=s.atol)
        else:
            np.testing.assert_array_equal(g, w.astype(g.dtype))


def test_every_op_has_a_sample() -> None:
    from lbdl_graph import OPS

    covered = {s.op.name for s in OP_DB}
    assert sorted(set(OPS) - covered) == []
