"""Samples of the run-time-shape ops that the ONNX importer emits for dynamic axes.

Each op reads its shape (or bounds) from an int64 tensor at run time; ``dims`` gives the type.
The oracle is ONNX's reference evaluator running the op the lowering emits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lbdl_graph import ops
from tests.op_db import Arrays, OpSample

__all__ = ["SAMPLES"]


def _with(shape: tuple[int, ...], *vectors: tuple[int, ...], dt: type = np.float32
          ) -> Callable[[np.random.Generator], Arrays]:
    """A float tensor of ``shape`` followed by int64 vectors."""

    def make(rng: np.random.Generator) -> Arrays:
        return [rng.standard_normal(shape).astype(dt),
                *(np.asarray(v, dtype=np.int64) for v in vectors)]
    return make

SAMPLES: list[OpSample] = [
    OpSample(ops.shape_of, _with((2, 3, 4)), label="all", onnx_op="Shape"),
    OpSample(ops.shape_of, _with((2, 3, 4)), attrs={"start": 1, "end": -1}, label="middle",
             onnx_op="Shape", onnx_attrs={"start": 1, "end": -1}),
    OpSample(ops.dynamic_reshape, _with((2, 3, 4), (0, -1)), attrs={"dims": (2, 12)},
             label="copy_infer", onnx_op="Reshape", grad_inputs=[0]),
    OpSample(ops.dynamic_reshape, _with((2, 3, 4), (4, 6), dt=np.float64),
             attrs={"dims": (4, 6), "allowzero": True}, label="allowzero_f64",
             onnx_op="Reshape", onnx_attrs={"allowzero": 1}, grad_inputs=[0]),
    OpSample(ops.dynamic_expand, _with((3, 1), (2, 3, 4)), attrs={"dims": (2, 3, 4)},
             label="broadcast", onnx_op="Expand", grad_inputs=[0]),
    OpSample(ops.dynamic_expand, _with((1, 4), (3, 1)), attrs={"dims": (3, 4)},
             label="keep_larger", onnx_op="Expand", grad_inputs=[0]),
    OpSample(ops.dynamic_slice, _with((4, 6), (1,), (5,)), attrs={"axes": (1,), "dims": (4, 4)},
             label="axis1", onnx_op="Slice", onnx_inputs=lambda a: [*a, np.asarray([1])]),
    OpSample(ops.dynamic_slice, _with((5, 3), (4,), (0,)),
             attrs={"axes": (0,), "steps": (-2,), "dims": (2, 3)}, label="backwards",
             onnx_op="Slice", onnx_inputs=lambda a: [*a, np.asarray([0]), np.asarray([-2])]),
    OpSample(ops.dynamic_range, lambda rng: [np.asarray(2, np.int64), np.asarray(11, np.int64),
                                              np.asarray(3, np.int64)],
             attrs={"dims": (3,)}, label="i64", onnx_op="Range"),
    OpSample(ops.dynamic_range, lambda rng: [np.asarray(1.0, np.float32),
                                              np.asarray(-1.0, np.float32),
                                              np.asarray(-0.5, np.float32)],
             attrs={"dims": (4,)}, label="f32_down", onnx_op="Range"),
]
