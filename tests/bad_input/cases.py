"""The bad-input table: small files that declare something wrong, and the error each must give.

Each case writes its file(s) into a directory and returns the path the API or CLI gets. The
expected result is a typed error (its class name), words its message must contain, and no
traceback.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

TB = 1 << 40  # 2^40 elements


@dataclass
class Case:
    """One bad input: how to write it, what kind of file it is and the error it must raise."""

    name: str
    kind: str  # onnx | text | checkpoint | npz
    write: Callable[[Path], Path]
    error: str
    words: tuple[str, ...] = ()
    cli: tuple[str, ...] = field(default=())  # extra CLI arguments (run verb) or ()


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: list[TensorProto] | None = None, *,
           opset: int = 17, ir: int = 9) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "bad", inputs, outputs, inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def _vi(name: str, shape: list[int | str] | None, elem: int = TensorProto.FLOAT
        ) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _i64(name: str, values: list[int]) -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _save(m: onnx.ModelProto, name: str) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        p = d / f"{name}.onnx"
        p.write_bytes(m.SerializeToString())
        return p
    return write


def _x() -> onnx.ValueInfoProto:
    return _vi("x", [2, 3])


def _ident(extra: list[onnx.NodeProto] | None = None) -> list[onnx.NodeProto]:
    return [*(extra or []), helper.make_node("Identity", ["x"], ["y"], name="id")]


def _bomb(op: str, ins: list[str], inits: list[TensorProto], **attrs: object) -> onnx.ModelProto:
    node = helper.make_node(op, ins, ["y"], name="bomb", **attrs)
    return _model([node], [_x()], [_vi("y", None)], inits)


def _external(d: Path, name: str, offset: str, length: str, target: str = "w.bin") -> Path:
    t = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], np.zeros(6, np.float32).tobytes(),
                           raw=True)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", target), ("offset", offset), ("length", length)):
        e = t.external_data.add()
        e.key, e.value = k, v
    m = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_x()],
               [_vi("y", [2, 3])], [t])
    if not (d / "w.bin").exists():
        (d / "w.bin").write_bytes(np.zeros(6, np.float32).tobytes())
    p = d / f"{name}.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def _fifo(d: Path) -> Path:
    fifo = d / "pipe.bin"
    if not fifo.exists():
        os.mkfifo(fifo)
    return _external(d, "fifo", "0", "24", "pipe.bin")


def _escaping_link(d: Path) -> Path:
    outside = d.parent / f"{d.name}_outside.bin"
    outside.write_bytes(np.zeros(6, np.float32).tobytes())
    link = d / "link.bin"
    if not link.exists():
        link.symlink_to(outside)
    return _external(d, "symlink", "0", "24", "link.bin")


def _huge_init() -> TensorProto:
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[TB])
    t.raw_data = b"\0" * 16
    return t


def _bad_elem_init() -> onnx.ModelProto:
    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    t.data_type = 34
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_x()],
                  [_vi("y", [2, 3])], [t])


def _attr_kind(op: str, name: str, value: object, ins: list[str] | None = None
               ) -> onnx.ModelProto:
    node = helper.make_node(op, ins or ["x"], ["y"], name="n0")
    node.attribute.append(helper.make_attribute(name, value))
    return _model([node], [_vi("x", [1, 1, 4, 4])], [_vi("y", None)])


def _no_value_attr() -> onnx.ModelProto:
    node = helper.make_node("Transpose", ["x"], ["y"], name="n0")
    a = node.attribute.add()
    a.name = "perm"
    return _model([node], [_vi("x", [2, 3])], [_vi("y", None)])


def _sparse() -> onnx.ModelProto:
    m = _model(_ident(), [_x()], [_vi("y", [2, 3])])
    vals = helper.make_tensor("s", TensorProto.FLOAT, [1], [1.0])
    idx = helper.make_tensor("si", TensorProto.INT64, [1], [0])
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(vals, idx, [4]))
    return m


def _text(body: str) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        p = d / "g.txt"
        p.write_text(f"graph g(%x: f32[2]):\n{body}\n")
        return p
    return write


def _ckpt(meta_text: str, name: str) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        from safetensors.numpy import save

        from lbdl_graph.frontends.training.checkpoint import FORMAT, checksum

        tensors = {"w": np.zeros(2, np.float32)}
        data = save(tensors, metadata={"format": FORMAT, "checksum": checksum(tensors),
                                       "meta": meta_text})
        p = d / f"{name}.safetensors"
        p.write_bytes(data)
        return p
    return write


def _npz_bomb(d: Path) -> Path:
    import zipfile

    header = {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)}
    text = repr(header).encode("latin1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    p = d / "bomb.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", npy)
    return p


def _sym_model(d: Path) -> Path:
    m = _model(_ident(), [_vi("x", ["N", 4])], [_vi("y", ["N", 4])])
    p = d / "sym.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def _ok_model(d: Path) -> Path:
    m = _model(_ident(), [_vi("x", [2, 4])], [_vi("y", [2, 4])])
    p = d / "ok.onnx"
    p.write_bytes(m.SerializeToString())
    return p


R, O, P, C, CLI = "ResourceError", "OnnxError", "ParseError", "CheckpointError", "CliError"
CASES: list[Case] = [
    Case("constantofshape_1e12", "onnx", _save(_bomb(
        "ConstantOfShape", ["s"], [_i64("s", [10 ** 6, 10 ** 6])]), "cos"), R,
        ("bomb", "bytes")),
    Case("range_1e12", "onnx", _save(_bomb("Range", ["a", "b", "c"], [
        helper.make_tensor("a", TensorProto.INT64, [], [0]),
        helper.make_tensor("b", TensorProto.INT64, [], [10 ** 12]),
        helper.make_tensor("c", TensorProto.INT64, [], [1])]), "range"), R, ("bomb", "bytes")),
    Case("range_zero_delta", "onnx", _save(_bomb("Range", ["a", "b", "c"], [
        helper.make_tensor("a", TensorProto.INT64, [], [0]),
        helper.make_tensor("b", TensorProto.INT64, [], [10]),
        helper.make_tensor("c", TensorProto.INT64, [], [0])]), "range0"), O, ("bomb", "delta")),
    Case("tile_1e12", "onnx", _save(_bomb("Tile", ["x", "r"], [_i64("r", [10 ** 6, 10 ** 6])]),
                                    "tile"), R, ("bomb", "bytes")),
    Case("expand_1e12", "onnx", _save(_bomb("Expand", ["x", "s"], [
        _i64("s", [10 ** 5, 10 ** 5, 2, 3])]), "expand"), R, ("bomb", "bytes")),
    Case("resize_1e12", "onnx", _save(_model(
        [helper.make_node("Resize", ["x", "", "sc"], ["y"], name="bomb")], [_vi("x", [1, 1, 4, 4])],
        [_vi("y", None)], [helper.make_tensor("sc", TensorProto.FLOAT, [4], [1, 1, 1e6, 1e6])]),
        "resize"), R, ("bomb", "bytes")),
    Case("constantofshape_negative", "onnx", _save(_bomb(
        "ConstantOfShape", ["s"], [_i64("s", [3, -2])]), "cosneg"), O, ("bomb", "negative")),
    Case("input_2p40", "onnx", _save(_model(_ident(), [_vi("x", [TB])], [_vi("y", [TB])]),
                                      "input"), R, ("graph input 'x'", "bytes")),
    Case("input_2p40_beside_symbolic", "onnx", _save(_model(
        _ident(), [_vi("x", [TB, "N"])], [_vi("y", [TB, "N"])]), "inputsym"), R,
        ("graph input 'x'", "at least", "bytes")),
    Case("initializer_2p40", "onnx", _save(_model(
        [helper.make_node("Add", ["x", "w"], ["y"])], [_x()], [_vi("y", None)],
        [_huge_init()]), "init"), R,
        ("initializer 'w'", "bytes")),
    Case("negative_input_dim", "onnx", _save(_model(_ident(), [_vi("x", [-3, 2])],
                                                    [_vi("y", None)]), "neg"), O,
         ("graph input 'x'", "negative")),
    Case("ir_version_99", "onnx", _save(_model(_ident(), [_x()], [_vi("y", None)], ir=99),
                                        "ir99"), O, ("IR version 99", "supported")),
    Case("opset_99", "onnx", _save(_model(_ident(), [_x()], [_vi("y", None)], opset=99),
                                   "op99"), O, ("opset 99", "supported")),
    Case("external_offset_text", "onnx", lambda d: _external(d, "extoff", "abc", "24"), O,
         ("offset", "integer")),
    Case("external_length_2p40", "onnx", lambda d: _external(d, "extlen", "0", str(TB)), R,
         ("external data length", "bytes")),
    Case("external_fifo", "onnx", _fifo, O, ("not a regular file",)),
    Case("external_symlink_out", "onnx", _escaping_link, O, ("outside the model directory",)),
    Case("unknown_elem_type_34", "onnx", _save(_bad_elem_init(), "elem34"), O,
         ("initializer 'w'", "34")),
    Case("float_where_ints", "onnx", _save(_attr_kind("MaxPool", "kernel_shape", 2.5), "fk"), O,
         ("kernel_shape", "expects a ints")),
    Case("list_where_int", "onnx", _save(_attr_kind("Flatten", "axis", [1, 2]), "la"), O,
         ("axis", "expects a int")),
    Case("dtype_as_float", "onnx", _save(_attr_kind("Cast", "to", 1.0), "cast"), O,
         ("'to'", "expects a int")),
    Case("attr_without_value", "onnx", _save(_no_value_attr(), "noval"), O,
         ("perm", "no value")),
    Case("complex_shape_operand", "onnx", _save(_model(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="r0")], [_x()], [_vi("y", None)],
        [helper.make_tensor("s", TensorProto.COMPLEX64, [1], [6 + 0j])]), "cshape"), O,
         ("node 'r0'", "shape", "integer tensor", "complex64")),
    Case("sparse_initializer", "onnx", _save(_sparse(), "sparse"), "OnnxUnsupportedError",
         ("sparse",)),
    Case("text_unary_minus_string", "text", _text(
        '  %0: f32[2] = pad[mode=-"abc"](%x)\n  return %0'), P, ("line 2, column",)),
    Case("text_int8_overflow", "text", _text(
        "  %0: i8[2] = constant[value=tensor(i8[2], [1000, 1])]()\n  return %0"), P,
        ("line 2, column", "int8")),
    Case("text_param_2p40", "text", _text(f"  param %w: f32[{TB}]\n  return %w"), R,
         ("param 'w'", "bytes")),
    Case("ckpt_meta_list", "checkpoint", _ckpt("[1, 2]", "list"), C, ("JSON object",)),
    Case("ckpt_meta_epoch_text", "checkpoint", _ckpt(json.dumps({"epoch": "two"}), "ep"), C,
         ("epoch",)),
    Case("ckpt_meta_history", "checkpoint", _ckpt(json.dumps({"history": [1]}), "hist"), C,
         ("history",)),
    Case("ckpt_meta_not_json", "checkpoint", _ckpt("{not json", "nj"), C, ("not JSON",)),
    Case("npz_header_1e12", "npz", _npz_bomb, R, ("bomb.npz", "bytes")),
    Case("bind_huge", "bind", _sym_model, R, ("--bind", "bytes"),
         cli=("--bind", f"N={10 ** 12}")),
]
