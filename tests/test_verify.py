"""The verifier: each malformed graph gets a typed error naming the node and source line."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph import (
    DTypeError,
    Graph,
    GraphBuilder,
    GraphError,
    Node,
    OpError,
    ShapeError,
    SourceLoc,
    Value,
    ops,
    tensor_type,
    verify,
)
from lbdl_graph.opdef import Trait, defop

LOC = SourceLoc("model.py", 42, "forward")
F32 = tensor_type("f32", (2, 3))


def _node(op, inputs, out_type, name, **attrs):  # type: ignore[no-untyped-def]
    out = Value(name + ":out", out_type)
    return Node(op, tuple(inputs), (out,), op.check_attrs(attrs), name, LOC)


def test_valid_graph_passes() -> None:
    x = Value("x", F32)
    n = _node(ops.relu, [x], F32, "r")
    g = Graph("g", (x,), n.outputs, (n,))
    assert verify(g) is g


def test_cycle_is_named() -> None:
    x = Value("x", F32)
    a_out, b_out = Value("a", F32), Value("b", F32)
    a = Node(ops.add, (x, b_out), (a_out,), {}, "node_a", LOC)
    b = Node(ops.relu, (a_out,), (b_out,), {}, "node_b", LOC)
    with pytest.raises(GraphError) as info:
        verify(Graph("g", (x,), (b_out,), (a, b)))
    msg = str(info.value)
    assert "cycle" in msg and "node_a" in msg and "node_b" in msg and "model.py:42" in msg


def test_undefined_value() -> None:
    x, ghost = Value("x", F32), Value("ghost", F32)
    n = _node(ops.add, [x, ghost], F32, "adder")
    with pytest.raises(GraphError) as info:
        verify(Graph("g", (x,), n.outputs, (n,)))
    assert "%ghost" in str(info.value) and "adder" in str(info.value)
    assert "model.py:42 in forward" in str(info.value)


def test_out_of_order_nodes() -> None:
    x = Value("x", F32)
    a = _node(ops.relu, [x], F32, "first")
    b = _node(ops.exp, [a.output], F32, "second")
    with pytest.raises(GraphError, match="out of order"):
        verify(Graph("g", (x,), b.outputs, (b, a)))


def test_ssa_violation() -> None:
    x = Value("x", F32)
    a = _node(ops.relu, [x], F32, "a")
    b = Node(ops.exp, (x,), a.outputs, {}, "b", LOC)
    with pytest.raises(GraphError, match="SSA"):
        verify(Graph("g", (x,), a.outputs, (a, b)))


def test_shape_mismatch_names_shapes() -> None:
    x = Value("x", F32)
    n = _node(ops.relu, [x], tensor_type("f32", (3, 2)), "r")
    with pytest.raises(ShapeError) as info:
        verify(Graph("g", (x,), n.outputs, (n,)))
    msg = str(info.value)
    assert "f32[3,2]" in msg and "f32[2,3]" in msg and "'r'" in msg and "model.py:42" in msg


def test_dtype_mismatch() -> None:
    x = Value("x", F32)
    n = _node(ops.relu, [x], tensor_type("f64", (2, 3)), "r")
    with pytest.raises(DTypeError):
        verify(Graph("g", (x,), n.outputs, (n,)))


def test_unknown_op_and_attribute() -> None:
    x = Value("x", F32)
    rogue = type(ops.relu)("relu", ("x",), ops.relu.infer, traits=frozenset({Trait.ELEMENTWISE}))
    n = Node(rogue, (x,), (Value("o", F32),), {}, "rogue", LOC)
    with pytest.raises(OpError, match="unknown op"):
        verify(Graph("g", (x,), n.outputs, (n,)))
    bad = Node(ops.softmax, (x,), (Value("s", F32),), {"axis": -1, "dim": 1}, "sm", LOC)
    with pytest.raises(OpError, match="unknown attribute"):
        verify(Graph("g", (x,), bad.outputs, (bad,)))


def test_missing_output_and_bad_param() -> None:
    x = Value("x", F32)
    with pytest.raises(GraphError, match="not produced"):
        verify(Graph("g", (x,), (Value("nowhere", F32),), ()))
    with GraphBuilder("p") as b:
        w = b.param("w", np.zeros((2, 3), np.float32))
        g = b.build([w])
    broken = g.replace(params=[type(g.params[0])(g.params[0].value, np.zeros((3,), np.float32))])
    with pytest.raises(GraphError, match="parameter 'w'"):
        verify(broken)


def test_defop_rejects_duplicates() -> None:
    with pytest.raises(OpError, match="declared twice"):
        defop("relu", ("x",), infer=ops.relu.infer)
