"""Values whose shapes are symbolic are sized at run time, once the feeds bind the dims: a bomb
hidden behind a dynamic dim is a ResourceError before any kernel allocates, not a hang."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.errors import ResourceError
from lbdl_graph.frontends.onnx import import_onnx
from lbdl_graph.limits import max_alloc_bytes, set_max_alloc_bytes


def _tile_bomb() -> onnx.ModelProto:
    node = helper.make_node("Tile", ["x", "r"], ["y"], name="bomb")
    g = helper.make_graph([node], "bomb", [helper.make_tensor_value_info(
        "x", TensorProto.INT64, ["N", "T"])], [helper.make_tensor_value_info(
            "y", TensorProto.INT64, None)], [helper.make_tensor("r", TensorProto.INT64, [2],
                                                               [1 << 31, 1 << 31])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def test_a_tile_bomb_behind_dynamic_dims_fails_fast_naming_the_node() -> None:
    g = import_onnx(_tile_bomb())
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match=r"%y at \{'N': 1, 'T': 1\}") as info:
        Interpreter(g).run({"x": np.zeros((1, 1), np.int64)})
    assert time.perf_counter() - t0 < 5  # refused before allocating
    assert info.value.node == "bomb" and info.value.op == "tile"


def test_sizes_are_checked_against_the_limit_of_the_moment() -> None:
    b = GraphBuilder("grow")
    x = b.input("x", "f32", ["N"])
    with b:
        y = ops.tile(x, repeats=(1000,))
    interp = Interpreter(b.build({"y": y}))
    old = max_alloc_bytes()
    try:
        assert interp.run({"x": np.ones(10, np.float32)})["y"].shape == (10_000,)
        set_max_alloc_bytes(1000)
        with pytest.raises(ResourceError, match="4,000 bytes"):
            interp.run({"x": np.ones(1, np.float32)})
        with pytest.raises(ResourceError):  # a cached set of dims is checked again
            interp.run({"x": np.ones(10, np.float32)})
    finally:
        set_max_alloc_bytes(old)
