"""Helpers for the ONNX importer tests: small models and the onnx.reference oracle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from lbdl_graph import Graph
from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends.onnx import import_onnx

OPSET = 21
F32 = TensorProto.FLOAT


def model(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, tuple[int, Sequence[Any]]],
          outputs: Sequence[str], *, inits: Mapping[str, np.ndarray] | None = None,
          opset: int = OPSET, name: str = "test") -> onnx.ModelProto:
    """A model from nodes, typed inputs ``{name: (elem_type, shape)}`` and output names."""
    ins = [helper.make_tensor_value_info(k, t, list(s)) for k, (t, s) in inputs.items()]
    outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    init = [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(list(nodes), name, ins, outs, init)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def single(op: str, inputs: Mapping[str, np.ndarray], n_out: int = 1, *,
           inits: Mapping[str, np.ndarray] | None = None, opset: int = OPSET,
           **attrs: Any) -> onnx.ModelProto:
    """A one-node model whose graph inputs have the dtypes and shapes of ``inputs``."""
    names = [*inputs, *(inits or {})]
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], name=f"{op}_node",
                            **attrs)
    typed = {k: (helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()}
    return model([node], typed, [f"y{i}" for i in range(n_out)], inits=inits, opset=opset)


def check(m: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, rtol: float = 1e-5,
          atol: float = 1e-6) -> Graph:
    """Import ``m``, run it on NumPy and compare every output with onnx.reference."""
    graph = import_onnx(m)
    want = ReferenceEvaluator(m).run(None, dict(feeds))
    live = {v.name for v in graph.inputs}
    got = run(graph, {k: v for k, v in feeds.items() if k in live}, training=False)
    for vi, w in zip(m.graph.output, want, strict=True):
        g = got[vi.name]
        assert g.dtype == w.dtype, f"{vi.name}: dtype {g.dtype}, expected {w.dtype}"
        assert g.shape == w.shape, f"{vi.name}: shape {g.shape}, expected {w.shape}"
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                   atol=atol, err_msg=vi.name)
    return graph


def rand(*shape: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """Standard normal test data."""
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)
