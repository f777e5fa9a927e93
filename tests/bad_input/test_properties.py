"""Property tests: generated bad inputs for every importable ONNX op and every file format end
in a typed error or a working graph, never a raw exception. New ops and formats inherit them:
the op list is the importer's own handler table."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.errors import LbdlError
from lbdl_graph.frontends.onnx import import_onnx
from lbdl_graph.frontends.onnx.context import HANDLERS
from lbdl_graph.limits import max_alloc_bytes, set_max_alloc_bytes
from lbdl_graph.text import parse_graph

OPSET = 21
OPS = sorted(k for k in HANDLERS if "::" not in k and onnx.defs.has(k))
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

dims = st.one_of(st.integers(0, 4), st.sampled_from([-1, -7, 1 << 31, 1 << 40]),
                 st.sampled_from(["N", "T"]))
shapes = st.lists(dims, min_size=0, max_size=4)
elem = st.sampled_from([TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL,
                        TensorProto.FLOAT16, TensorProto.INT32])
big_int = st.one_of(st.integers(-4, 8), st.sampled_from([-(1 << 40), 1 << 31, 1 << 62]))
attr_value = st.one_of(
    big_int, st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.lists(big_int, min_size=1, max_size=5),
    st.lists(st.floats(-5, 5, width=32), min_size=1, max_size=4),
    st.text(max_size=6).map(lambda s: s.encode()), st.sampled_from([b"NOTSET", b"SAME_UPPER"]),
)


@pytest.fixture(autouse=True)
def _small_limit() -> Any:
    old = max_alloc_bytes()
    set_max_alloc_bytes(64 << 20)
    yield
    set_max_alloc_bytes(old)


def _run_or_typed(model: onnx.ModelProto | bytes) -> None:
    """Import and run once; only LbdlError may escape (the test fails on anything else)."""
    try:
        g = import_onnx(model)
        feeds = {v.name: np.zeros([d if isinstance(d, int) else 1 for d in v.shape],
                                  v.dtype.numpy) for v in g.inputs}
        Interpreter(g, training=False).run(feeds)
    except LbdlError:
        pass


@st.composite
def one_node_models(draw: st.DrawFn, op: str) -> onnx.ModelProto:
    schema = onnx.defs.get_schema(op, 26)
    opset = max(OPSET, schema.since_version)
    n_in = draw(st.integers(schema.min_input, max(schema.min_input, min(schema.max_input, 4))))
    ins = [helper.make_tensor_value_info(f"x{i}", draw(elem), draw(shapes)) for i in range(n_in)]
    attrs = {}
    for name in draw(st.lists(st.sampled_from(sorted(schema.attributes) or ["axis"]),
                              max_size=3, unique=True)):
        attrs[name] = draw(attr_value)
    node = helper.make_node(op, [v.name for v in ins], ["y"], name="n", **attrs)
    g = helper.make_graph([node], "p", ins, [helper.make_tensor_value_info("y", 0, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("op", OPS)
def test_every_op_gives_typed_errors_for_generated_nodes(op: str) -> None:
    @SETTINGS
    @given(one_node_models(op))
    def check(model: onnx.ModelProto) -> None:
        _run_or_typed(model)

    check()


@pytest.fixture(scope="module")
def exported() -> bytes:
    from lbdl_graph.backends.onnx import to_onnx
    from lbdl_graph.frontends.zoo import ZOO

    return to_onnx(ZOO["mlp_tiny"].trace(), training=False).SerializeToString()


@SETTINGS
@given(data=st.data())
def test_mutated_onnx_bytes_give_typed_errors(exported: bytes, data: st.DataObject) -> None:
    b = bytearray(exported)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(b) // 2, len(b)))
    _run_or_typed(bytes(b[:cut]))


ir_types = st.sampled_from(["f32", "f16", "i64", "i8", "bool", "f64", "q9", ""])
text_dims = st.lists(st.one_of(st.integers(-3, 5), st.just(1 << 40), st.sampled_from(["N", "x y"])),
                     max_size=3)


@SETTINGS
@given(t=ir_types, d=text_dims, op=st.sampled_from(["relu", "reshape", "pad", "constant", "zz"]),
       attr=st.one_of(st.integers(-(1 << 70), 1 << 70), st.text(max_size=5),
                      st.just("-\"s\""), st.just("tensor(i8[2], [1000, 1])")))
def test_printed_graphs_give_parse_errors(t: str, d: list[Any], op: str, attr: Any) -> None:
    shape = ",".join(str(x) for x in d)
    text = (f"graph g(%x: {t}[{shape}]):\n  param %w: {t}[{shape}]\n"
            f"  %0: {t}[{shape}] = {op}[value={attr}](%x)\n  return %0\n")
    with contextlib.suppress(LbdlError):
        parse_graph(text)


@SETTINGS
@given(header=st.dictionaries(st.sampled_from(["descr", "fortran_order", "shape"]),
                              st.one_of(st.text(max_size=4), st.integers(-3, 1 << 40),
                                        st.lists(st.integers(-2, 1 << 40), max_size=3),
                                        st.booleans())),
       tail=st.integers(0, 64))
def test_npy_headers_give_typed_errors(tmp_path_factory: pytest.TempPathFactory,
                                       header: dict[str, Any], tail: int) -> None:
    from lbdl_graph.frontends.cli.common import load_arrays

    text = repr({"descr": "<f4", "fortran_order": False, "shape": (2,), **header})
    text += " " * (-(len(text) + 11) % 64) + "\n"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + b"\0" * tail
    path: Path = tmp_path_factory.mktemp("npy") / "a.npy"
    path.write_bytes(raw)
    with contextlib.suppress(LbdlError):
        load_arrays([f"x={path}"])
