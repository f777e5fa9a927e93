"""Samples of the random ops. ONNX has no counter-based random op, so the oracle is the op's
own graph decomposition (integer hash ops) run through the NumPy interpreter; the fused kernel
must match it bit for bit (rtol = atol = 0). Statistical checks live in tests/test_random.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import dtype
from lbdl_graph.opdef import OpDef
from tests.op_db import OpSample
from tests.samples.elementwise import Gen, fixed, floats, inputs

__all__ = ["SAMPLES", "run_decomposition"]


def run_decomposition(op: OpDef, *arrays: np.ndarray, **attrs: Any) -> np.ndarray:
    """Build ``op``'s decomposition as a graph and run it with the NumPy interpreter."""
    b = GraphBuilder(f"{op.name}_decomposition")
    ins = [b.input(f"in{i}", dtype(a.dtype), a.shape) for i, a in enumerate(arrays)]
    with b:
        out = op.decompose(*ins, **op.check_attrs(attrs))  # type: ignore[misc]
    graph = b.build([out])
    assert all(n.op is not op for n in graph.nodes), "the decomposition must not use the op"
    (res,) = run(graph, {v.name: a for v, a in zip(ins, arrays, strict=True)}).values()
    return res


def _decomposed(op: OpDef) -> Callable[..., np.ndarray]:
    return lambda *arrays, **attrs: run_decomposition(op, *arrays, **attrs)


def _key(seed: int, counter: int) -> Gen:
    return fixed([seed, counter], "int64")


def _sample(op: OpDef, label: str, x: Gen, key: Gen, grad: bool = True,
            **attrs: Any) -> OpSample:
    return OpSample(op, inputs(x, key), attrs=attrs, label=label, reference=_decomposed(op),
                    rtol=0.0, atol=0.0, grad=grad and op is ops.dropout, grad_inputs=(0,))


SAMPLES: list[OpSample] = []
for _op in (ops.random_uniform, ops.random_normal):
    SAMPLES += [
        _sample(_op, "f32", floats(3, 4), _key(0, 0)),
        _sample(_op, "f64_salt", floats(2, 3, 5), _key(42, 7), salt=3, dtype="float64"),
        _sample(_op, "int_like", fixed([[1, 2], [3, 4]], "int64"), _key(1, 2), dtype="float32"),
        _sample(_op, "f16", floats(33), _key(5, 9), salt=11, dtype="float16"),
        _sample(_op, "bf16", floats(4, 5), _key(6, 1), dtype="bfloat16"),
        _sample(_op, "big_key", floats(17), _key(2**40 + 5, -3), salt=-9),
        _sample(_op, "neg_salt", floats(2, 8), _key(-1, 2**62), salt=-(2**40)),
        _sample(_op, "scalar", floats(), _key(3, 4)),
        _sample(_op, "empty", floats(0, 3), _key(3, 4)),
    ]
SAMPLES += [
    _sample(ops.dropout, "default", floats(4, 5), _key(0, 0)),
    _sample(ops.dropout, "ratio", floats(3, 7, dt="float64"), _key(9, 1), ratio=0.1, salt=5),
    _sample(ops.dropout, "ratio0", floats(6), _key(9, 1), ratio=0.0),
    _sample(ops.dropout, "ratio_high", floats(50), _key(1, 3), ratio=0.95, salt=2),
    _sample(ops.dropout, "f16", floats(40, dt="float16"), _key(7, 7), ratio=0.3),
    _sample(ops.dropout, "bf16", floats(5, 6, dt="bfloat16"), _key(7, 8), ratio=0.25),
    _sample(ops.dropout, "special", fixed([np.inf, -np.inf, np.nan, -0.0, -1.0, 1e30] * 4),
            _key(1, 1), grad=False, ratio=0.5),
    _sample(ops.dropout, "scalar", floats(), _key(2, 2), ratio=0.5),
    _sample(ops.dropout, "empty", floats(2, 0), _key(2, 2)),
]
