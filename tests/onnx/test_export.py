"""ONNX export: model header, names, sources, symbolic dims, and safe saving and loading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from lbdl_graph import GraphBuilder, OnnxError, __version__, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, export_graph, load_onnx_model, save_onnx, to_onnx
from lbdl_graph.backends.onnx import export as export_module
from lbdl_graph.graph import Graph
from tests.onnx.test_lowering import check_model


def mlp(hidden: int = 8) -> Graph:
    """A small MLP with a symbolic batch dim, scoped node names and a bit of metadata."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("mlp")
    x = b.input("x", "f32", ["N", 4])
    w1 = b.param("w1", rng.standard_normal((4, hidden)).astype(np.float32))
    w2 = b.param("w2", rng.standard_normal((hidden, 3)).astype(np.float32))
    with b, b.scope("layer1"):
        h = ops.relu(ops.matmul(x, w1))
    with b, b.scope("head"):
        y = ops.softmax(ops.matmul(h, w2), axis=-1)
    b.metadata.update({"task": "demo", "lr": 0.1, "opaque": object()})
    return b.build({"y": y})


def batch(n: int = 5) -> dict[str, np.ndarray]:
    """Inputs for :func:`mlp`."""
    return {"x": np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32)}


def test_model_header_and_metadata() -> None:
    m = to_onnx(mlp())
    assert m.ir_version == 10 and m.ir_version <= 13  # ORT 1.31 loads IR <= 13
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 21)]
    assert (m.producer_name, m.producer_version) == ("lbdl-graph", __version__)
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["lbdl.metadata"]) == {"task": "demo", "lr": 0.1}  # opaque skipped
    assert props["lbdl.graph"] == "mlp"
    check_model(m)


@pytest.mark.parametrize("opset", range(17, 27))
def test_every_opset_checks_and_loads(opset: int) -> None:
    g = mlp()
    m = to_onnx(g, opset=opset)
    assert m.opset_import[0].version == opset and 10 <= m.ir_version <= 13
    check_model(m)
    got = OrtRunner(m, providers="cpu").run(batch())
    np.testing.assert_allclose(got["y"], Interpreter(g).run(batch())["y"], rtol=1e-5, atol=1e-6)


def test_bad_options_raise_typed_errors() -> None:
    with pytest.raises(OnnxError, match="opset 16"):
        to_onnx(mlp(), opset=16)
    with pytest.raises(OnnxError, match="target"):
        to_onnx(mlp(), target="tensorrt")


def test_symbolic_dims_are_dim_params() -> None:
    m = to_onnx(mlp())
    (x,) = m.graph.input
    dims = x.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and not dims[0].HasField("dim_value")
    assert dims[1].dim_value == 4
    (y,) = m.graph.output
    assert y.name == "y" and y.type.tensor_type.shape.dim[0].dim_param == "N"


def test_node_names_and_relative_source_lines() -> None:
    g = mlp()
    m = to_onnx(g)
    names = [n.name for n in m.graph.node]
    assert names == [n.name for n in g.nodes]  # one ONNX node per IR node here
    assert "layer1/matmul" in names and "head/softmax" in names
    node = next(n for n in m.graph.node if n.name == "layer1/matmul")
    path, line = node.doc_string.split(" in ")[0].rsplit(":", 1)
    assert not os.path.isabs(path) and path.endswith("test_export.py")
    assert "ops.matmul(x, w1)" in Path(path).read_text().splitlines()[int(line) - 1]
    props = {p.key: p.value for p in node.metadata_props}
    assert props == {"lbdl.node": "layer1/matmul", "lbdl.op": "matmul", "lbdl.scope": "layer1"}


def test_helper_nodes_are_prefixed_with_the_ir_node_name() -> None:
    b = GraphBuilder("like")
    x = b.input("x", "f32", ["N", 3])
    with b:
        y = ops.full_like(x, value=2.0)
    ex = export_graph(b.build([y]))
    names = [n.name for n in ex.model.graph.node]
    assert names == ["full_like/Shape", "full_like"]
    assert {ex.node_map[n].name for n in names} == {"full_like"}


def test_params_are_initializers_or_overridable_inputs() -> None:
    g = mlp()
    m = to_onnx(g)
    assert {"w1", "w2"} <= {t.name for t in m.graph.initializer}
    assert [i.name for i in m.graph.input] == ["x"]
    m2 = to_onnx(g, params_as_inputs=True)
    assert [i.name for i in m2.graph.input] == ["x", "w1", "w2"]
    check_model(m2)
    w2 = np.zeros((8, 3), np.float32)  # uniform logits -> uniform softmax
    out = OrtRunner(m2, providers="cpu").run({**batch(), "w2": w2})["y"]
    np.testing.assert_allclose(out, np.full((5, 3), 1 / 3), rtol=1e-6)


# ---------------------------------------------------------------- files


def test_save_and_load_inline(tmp_path: Path) -> None:
    path = save_onnx(mlp(), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    m = load_onnx_model(path)
    assert m == to_onnx(mlp())
    want = Interpreter(mlp()).run(batch())["y"]
    np.testing.assert_allclose(OrtRunner(path, providers="cpu").run(batch())["y"], want,
                               rtol=1e-5, atol=1e-6)


def _saved_external(tmp_path: Path) -> Path:
    return save_onnx(mlp(hidden=256), tmp_path / "m.onnx", external_data=True)


def test_external_data_round_trip(tmp_path: Path) -> None:
    path = _saved_external(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    raw = onnx.load(str(path), load_external_data=False)
    w1 = next(t for t in raw.graph.initializer if t.name == "w1")
    assert w1.data_location == onnx.TensorProto.EXTERNAL
    assert {e.key: e.value for e in w1.external_data}["location"] == "m.onnx.data"
    m = load_onnx_model(path)
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(
        next(t for t in m.graph.initializer if t.name == "w1")), mlp(256).param_map["w1"].data)
    want = Interpreter(mlp(256)).run(batch())["y"]
    for source in (path, m):
        got = OrtRunner(source, providers="cpu").run(batch())["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_large_models_go_external_automatically(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "EXTERNAL_THRESHOLD", 4096)
    save_onnx(mlp(hidden=256), tmp_path / "big.onnx")
    save_onnx(mlp(hidden=8), tmp_path / "small.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data",
                                                          "small.onnx"]


def test_failed_save_leaves_nothing_half_written(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_onnx(mlp(), tmp_path / "m.onnx")
    before = path.read_bytes()

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx.external_data_helper, "write_external_data_tensors", disk_full)
    with pytest.raises(OnnxError, match="No space left"):
        save_onnx(mlp(hidden=256), path, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left
    assert path.read_bytes() == before


def test_bad_output_paths_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(OnnxError, match="does not exist"):
        save_onnx(mlp(), tmp_path / "missing" / "m.onnx")
    with pytest.raises(OnnxError, match="is a directory"):
        save_onnx(mlp(), tmp_path)


def _relocate(path: Path, location: str) -> None:
    """Point every external tensor of the saved model at ``location``."""
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(m.SerializeToString())


@pytest.mark.parametrize("location", ["../outside.data", "sub/../../outside.data",
                                      "/tmp/outside.data", "\\\\server\\share\\x.data"])
def test_external_data_outside_the_model_dir_is_rejected(tmp_path: Path, location: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _saved_external(model_dir)
    (tmp_path / "outside.data").write_bytes((model_dir / "m.onnx.data").read_bytes())
    _relocate(path, location)
    with pytest.raises(OnnxError, match="outside"):
        load_onnx_model(path)
    with pytest.raises(OnnxError, match="outside"):
        OrtRunner(path, providers="cpu")


def test_external_data_symlink_leaving_the_dir_is_rejected(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _saved_external(model_dir)
    secret = tmp_path / "secret.data"
    (model_dir / "m.onnx.data").rename(secret)
    (model_dir / "m.onnx.data").symlink_to(secret)
    with pytest.raises(OnnxError, match="outside the model's directory"):
        load_onnx_model(path)


def test_missing_or_truncated_external_data(tmp_path: Path) -> None:
    path = _saved_external(tmp_path)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(OnnxError, match="truncated"):
        load_onnx_model(path)
    data.unlink()
    with pytest.raises(OnnxError, match="missing"):
        load_onnx_model(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupted_model_files_raise_onnx_error(tmp_path: Path, damage: str) -> None:
    path = save_onnx(mlp(), tmp_path / "broken.onnx")
    good = path.read_bytes()
    bad = {"garbage": b"\x08\xff\xff\xff" + os.urandom(64) + good[:10],
           "truncated": good[: len(good) // 2], "empty": b""}[damage]
    path.write_bytes(bad)
    with pytest.raises(OnnxError, match=r"broken\.onnx"):
        load_onnx_model(path)
    with pytest.raises(OnnxError, match=r"broken\.onnx"):
        OrtRunner(path, providers="cpu")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(OnnxError, match="cannot read"):
        load_onnx_model(tmp_path / "nope.onnx")


def test_a_tied_weight_is_stored_once() -> None:
    """An embedding that is also the head: fold_params stores ``emb.T`` beside ``emb``; the
    file stores ``emb`` once and makes ``emb.T`` by a Transpose, with the same results."""
    from lbdl_graph.passes.fold_parameters import fold_params

    rng = np.random.default_rng(0)
    b = GraphBuilder("tied")
    ids = b.input("ids", "i64", ["N"])
    emb = b.param("emb", rng.standard_normal((64, 32)).astype(np.float32))
    with b:
        y = ops.matmul(ops.gather(emb, ids, axis=0), ops.transpose(emb, perm=(1, 0)))
    g = fold_params(b.build({"y": y})).graph
    assert {p.name for p in g.params} == {"emb", "emb.T"}
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert [t.name for t in model.graph.initializer] == ["emb"]
    (tie,) = [n for n in model.graph.node if n.name == "emb.T/tied"]
    assert (tie.op_type, list(tie.input), list(tie.output)) == ("Transpose", ["emb"], ["emb.T"])
    feeds = {"ids": np.array([3, 0, 63], dtype=np.int64)}
    want = Interpreter(g, training=False).run(feeds)["y"]
    np.testing.assert_allclose(OrtRunner(model).run(feeds)["y"], want, rtol=1e-6, atol=1e-6)
    # a copy that was changed on its own is no transpose of the source: both are stored
    changed = g.replace(params=[p if p.name != "emb.T" else type(p)(p.value, p.data + 1,
                                                                   p.trainable)
                                for p in g.params])
    assert {t.name for t in to_onnx(changed).graph.initializer} == {"emb", "emb.T"}
