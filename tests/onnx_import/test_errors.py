"""Importer errors: unsupported ops listed at once, broken files, unsafe external data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lbdl_graph import OnnxError
from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends.onnx import OnnxUnsupportedError, import_onnx

from .common import F32, model, rand, single


def test_unsupported_ops_are_all_listed_in_one_error() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("NonZero", ["a"], ["b"], name="nz_first"),
        helper.make_node("Unique", ["x"], ["c"], name="uniq"),
        helper.make_node("NonZero", ["x"], ["d"], name="nz_second"),
        helper.make_node("Det", ["x"], ["e"], name="det"),
        helper.make_node("Add", ["b", "d"], ["f"], name="add"),  # fed by unsupported nodes
    ]
    m = model(nodes, {"x": (F32, (3, 3))}, ["c", "e", "f"])
    with pytest.raises(OnnxUnsupportedError) as info:
        import_onnx(m)
    e = info.value
    assert e.ops == {"NonZero": (2, "nz_first"), "Unique": (1, "uniq"), "Det": (1, "det")}
    text = str(e)
    assert "NonZero (2 nodes, first 'nz_first')" in text
    assert "Unique (1 node, first 'uniq')" in text and "Det (1 node, first 'det')" in text
    assert "Add" not in text  # supported, only skipped


def test_unsupported_features_name_the_node_and_dynamic_inputs() -> None:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="resh"),
             helper.make_node("Dropout", ["x", "r", "t"], ["z"], name="drop")]
    m = model(nodes, {"x": (F32, (2, 6)), "shape": (TensorProto.INT64, (2,))}, ["y", "z"],
              inits={"r": np.array(0.5, np.float32), "t": np.array(True)})
    with pytest.raises(OnnxUnsupportedError) as info:
        import_onnx(m)
    e = info.value
    assert e.needs_constant == ["shape"]
    assert "node 'resh' (Reshape): dynamic shape input 'shape'" in str(e)
    assert "node 'drop' (Dropout): training-mode Dropout with random mask" in str(e)
    assert e.hint is None or "constant_inputs" in e.hint


def test_unsupported_dtype_of_an_input() -> None:
    m = single("Relu", {"x": np.zeros((2,), np.uint16)})
    with pytest.raises(OnnxUnsupportedError, match="unsupported element type uint16"):
        import_onnx(m)


def _save(m: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(m.SerializeToString())
    return path


def test_truncated_corrupted_and_missing_files(tmp_path: Path) -> None:
    w = rand(64, 64)
    m = single("MatMul", {"x": rand(2, 64)}, inits={"w": w})
    good = _save(m, tmp_path / "good.onnx")
    data = good.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxError, match=r"cut\.onnx.*(truncated|corrupted)"):
        import_onnx(tmp_path / "cut.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not a protobuf \x00" * 10)
    with pytest.raises(OnnxError, match=r"junk\.onnx"):
        import_onnx(tmp_path / "junk.onnx")
    with pytest.raises(OnnxError, match=r"missing\.onnx: cannot read"):
        import_onnx(tmp_path / "missing.onnx")
    # an initializer whose raw data lost bytes (the protobuf itself still parses)
    bad = onnx.ModelProto()
    bad.CopyFrom(m)
    t = bad.graph.initializer[0]
    t.raw_data = t.raw_data[:-8]
    with pytest.raises(OnnxError, match=r"bad\.onnx: initializer 'w'.*truncated or corrupted"):
        import_onnx(_save(bad, tmp_path / "bad.onnx"))


def _external(m: onnx.ModelProto, location: str, size: int | None = None) -> onnx.ModelProto:
    """Mark the model's first initializer as stored in ``location``."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    t = out.graph.initializer[0]
    nbytes = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(size or nbytes))):
        t.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    return out


def test_external_data_loads_and_rejects_traversal(tmp_path: Path) -> None:
    w = rand(4, 3)
    x = rand(2, 4)
    m = single("MatMul", {"x": x}, inits={"w": w})
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(w.tobytes())
    g = import_onnx(_save(_external(m, "weights.bin"), model_dir / "ok.onnx"))
    np.testing.assert_allclose(run(g, {"x": x})["y0"], x @ w, rtol=1e-6)

    (tmp_path / "evil.bin").write_bytes(w.tobytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(w.tobytes())
    os.symlink(outside / "secret.bin", model_dir / "link.bin")
    os.symlink(outside, model_dir / "linkdir")
    for location in ("../evil.bin", "/etc/passwd", "link.bin", "linkdir/secret.bin",
                     "sub/../../evil.bin", "..\\evil.bin"):
        path = _save(_external(m, location), model_dir / "evil.onnx")
        with pytest.raises(OnnxError, match=r"evil\.onnx: tensor 'w'.*rejected"):
            import_onnx(path)


def test_external_data_truncated_or_missing(tmp_path: Path) -> None:
    w = rand(4, 3)
    m = single("MatMul", {"x": rand(2, 4)}, inits={"w": w})
    (tmp_path / "short.bin").write_bytes(w.tobytes()[:20])
    with pytest.raises(OnnxError, match=r"short\.bin' is truncated"):
        import_onnx(_save(_external(m, "short.bin"), tmp_path / "m.onnx"))
    with pytest.raises(OnnxError, match=r"cannot read external data file 'nope\.bin'"):
        import_onnx(_save(_external(m, "nope.bin"), tmp_path / "m2.onnx"))
    with pytest.raises(OnnxError, match="model directory is unknown"):
        import_onnx(_external(m, "short.bin"))  # a ModelProto without base_dir


def test_invalid_models_raise_typed_errors() -> None:
    node = helper.make_node("Add", ["x", "missing"], ["y"], name="add")
    with pytest.raises(OnnxError, match="tensor 'missing' is used but never defined"):
        import_onnx(model([node], {"x": (F32, (2,))}, ["y"]))
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    m = model([node], {"x": (F32, (2, 3))}, ["y"], inits={"w": rand(4, 5)})
    with pytest.raises(OnnxError, match=r"node 'mm' \(MatMul\): matmul: inner dims differ"):
        import_onnx(m)
    with pytest.raises(OnnxError, match=r"expects a path, bytes or onnx\.ModelProto"):
        import_onnx(42)  # type: ignore[arg-type]
    with pytest.raises(OnnxError, match="constant_inputs names unknown graph inputs"):
        import_onnx(model([helper.make_node("Relu", ["x"], ["y"])], {"x": (F32, (2,))}, ["y"]),
                    constant_inputs={"nope": np.zeros(2)})


def test_sparse_initializer_and_sequence_inputs_are_reported() -> None:
    seq = helper.make_tensor_sequence_value_info("s", F32, None)
    node = helper.make_node("SequenceLength", ["s"], ["n"])
    g = helper.make_graph([node], "seq", [seq], [helper.make_empty_tensor_value_info("n")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(OnnxUnsupportedError, match="sequence_type type"):
        import_onnx(m)
    m = single("Relu", {"x": rand(2)})
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sp")
    idx = numpy_helper.from_array(np.array([0], np.int64), "sp_idx")
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, idx, [2]))
    with pytest.raises(OnnxUnsupportedError, match="sparse initializers"):
        import_onnx(m)


def test_newer_opset_cycle_and_dangling_names_are_typed_errors() -> None:
    from onnx import TensorProto, helper

    from lbdl_graph.errors import OnnxError
    from lbdl_graph.frontends.onnx import import_onnx

    def model(nodes: list, opset: int = 21):  # type: ignore[no-untyped-def, type-arg]
        g = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

    with pytest.raises(OnnxError, match="newer than"):
        import_onnx(model([helper.make_node("Relu", ["x"], ["y"])], opset=99))
    cyclic = [helper.make_node("Add", ["x", "b"], ["a"], name="add"),
              helper.make_node("Relu", ["a"], ["b"], name="relu"),
              helper.make_node("Relu", ["b"], ["y"], name="out")]
    with pytest.raises(OnnxError, match="cycle"):
        import_onnx(model(cyclic))
    with pytest.raises(OnnxError, match="never defined"):
        import_onnx(model([helper.make_node("Relu", ["nope"], ["y"])]))
