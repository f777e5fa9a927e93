"""Builder, types, symbolic shapes, op schemas and source locations."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import DTypeError, GraphBuilder, GraphError, OpError, ShapeError, dtype, ops
from lbdl_graph.shapes import broadcast_shapes, conv_out_dim, reshape_shape


def test_dtype_lookup() -> None:
    assert dtype("f32") is dtype("float32") is dtype(np.float32)
    assert dtype("bf16").bits == 16 and dtype("i4").itemsize == 0.5
    with pytest.raises(DTypeError, match="unsupported dtype"):
        dtype("complex64")


@pytest.mark.parametrize(
    ("a", "b", "out"),
    [(("N", 3), (3,), ("N", 3)), ((1, 4), (5, 1), (5, 4)), ((), ("T",), ("T",)),
     (("N", 1, 8), ("N", "T", 1), ("N", "T", 8))],
)
def test_broadcast_symbolic(a: tuple, b: tuple, out: tuple) -> None:
    assert broadcast_shapes(a, b) == out


def test_broadcast_mismatch_names_both_shapes() -> None:
    with pytest.raises(ShapeError, match=r"\[N,3\] and \[N,4\]"):
        broadcast_shapes(("N", 3), ("N", 4))


@pytest.mark.parametrize(
    ("src", "target", "out"),
    [(("N", 1, 28, 28), (0, -1), ("N", 784)), (("N", "T", 64), (0, 0, 4, 16), ("N", "T", 4, 16)),
     ((2, 3, 4), (-1,), (24,)), (("N", 4), (-1,), ("N*4",)), ((6,), (2, 3), (2, 3))],
)
def test_reshape_rule(src: tuple, target: tuple, out: tuple) -> None:
    assert reshape_shape(src, target) == out


def test_reshape_rule_errors() -> None:
    with pytest.raises(ShapeError):
        reshape_shape((2, 3), (4, -1))
    with pytest.raises(ShapeError):
        reshape_shape(("N", 3), (3, -1, -1))


def test_conv_out_dim_symbolic_and_static() -> None:
    assert conv_out_dim(28, 5, 1, 0, 1) == 24
    assert conv_out_dim(28, 3, 2, 2, 1) == 14
    assert conv_out_dim("H", 3, 1, 2, 1) == "H"
    assert conv_out_dim("H", 3, 2, 2, 1) == "(H-1)//2+1"
    with pytest.raises(ShapeError):
        conv_out_dim(2, 5, 1, 0, 1)


def test_builder_records_types_names_and_source() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", ("N", 4))
        w = b.param("w", np.ones((4, 3), np.float32))
        with b.scope("layer"):
            y = ops.relu(ops.matmul(x, w))  # this line is the source
        g = b.build([y])
    assert [n.name for n in g.nodes] == ["layer/matmul", "layer/relu"]
    assert str(y.type) == "f32[N,3]"
    src = g.nodes[0].source
    assert src is not None and src.file.endswith("test_core_ir.py")
    with open(src.file) as f:
        assert "y = ops.relu" in f.read().splitlines()[src.line - 1]


def test_shape_error_names_node_shapes_and_user_line() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", ("N", 4))
        w = b.param("w", np.ones((5, 3), np.float32))
        with pytest.raises(ShapeError) as info:
            ops.matmul(x, w)
    msg = str(info.value)
    assert "f32[N,4]" in msg and "f32[5,3]" in msg and "matmul" in msg
    assert "test_core_ir.py" in msg


def test_dtype_error_and_attribute_errors() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (3,))
        i = b.input("i", "i64", (3,))
        with pytest.raises(DTypeError, match="dtypes differ"):
            ops.add(x, i)
        with pytest.raises(OpError, match="unknown attribute"):
            ops.softmax(x, dim=0)
        with pytest.raises(OpError, match="expects int"):
            ops.softmax(x, axis="a")
        with pytest.raises(OpError, match="takes"):
            ops.add(x)


def test_no_active_builder() -> None:
    with pytest.raises(GraphError, match="no active graph"):
        ops.relu(None)  # type: ignore[arg-type]


def test_named_outputs_and_multi_output() -> None:
    with GraphBuilder("g") as b:
        x = b.input("x", "f32", (4, 6))
        a, c = ops.split(x, axis=1, split=(2, 4))
        g = b.build({"left": a, "right": c})
    assert g.output_names() == ["left", "right"]
    assert [str(v.type) for v in g.outputs] == ["f32[4,2]", "f32[4,4]"]


def test_duplicate_names_rejected() -> None:
    b = GraphBuilder("g")
    b.input("x", "f32", (1,))
    with pytest.raises(GraphError, match="already used"):
        b.input("x", "f32", (1,))


def test_eval_dim() -> None:
    from lbdl_graph.shapes import eval_dim

    assert eval_dim(7) == 7
    assert eval_dim("N", {"N": 4}) == 4
    assert eval_dim("(H-3)//2+1", {"H": 11}) == 5
    assert eval_dim("N*4", {}, default=2) == 8
    with pytest.raises(ShapeError, match="not bound"):
        eval_dim("T-1", {})
