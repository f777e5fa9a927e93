"""Constant folding: golden cases, the limits it keeps, and its folders against the kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lbdl_graph import GraphBuilder, Node, ops
from lbdl_graph.backends.numpy import KERNELS
from lbdl_graph.passes.fold_constants import FOLDERS, fold_constants, fold_node
from tests.passes.util import check_pass, check_unchanged, graph_of


def test_fold_arithmetic_chain() -> None:
    check_pass(fold_constants, """
    graph g(%x: f32[3]):
      %0: f32[] = constant[value=tensor(f32[], 2.0)]()
      %1: f32[] = constant[value=tensor(f32[], 8.0)]()
      %2: f32[] = mul(%0, %1)
      %3: f32[] = sqrt(%2)
      %4: f32[3] = add(%x, %3)
      return %4
    """, """
    graph g(%x: f32[3]):
      %0: f32[] = constant[value=tensor(f32[], 4.0)]()
      %1: f32[3] = add(%x, %0)
      return %1
    """, stats={"folded": 2, "dead_nodes": 3})


def test_fold_shape_computation_from_a_static_shape() -> None:
    # iota_like reads only its input's shape, so it folds although %x is an input
    check_pass(fold_constants, """
    graph g(%x: f32[2,3]):
      %0: i64[2,3] = iota_like[axis=1](%x)
      %1: i64[] = constant[value=tensor(i64[], 2)]()
      %2: i64[2,3] = mul(%0, %1)
      %3: i64[3,2] = transpose[perm=(1, 0)](%2)
      %4: i64[6] = reshape[shape=(-1,)](%3)
      %5: f32[6] = cast[to=f32](%4)
      %6: f32[2,3] = reshape[shape=(2, 3)](%5)
      %7: f32[2,3] = add(%x, %6)
      return %7
    """, """
    graph g(%x: f32[2,3]):
      %0: f32[2,3] = constant[value=tensor(f32[2,3], [[0.0, 0.0, 2.0], [2.0, 4.0, 4.0]])]()
      %1: f32[2,3] = add(%x, %0)
      return %1
    """, stats={"folded": 6, "dead_nodes": 6})


def test_folded_graph_output_keeps_its_name() -> None:
    g = graph_of("""
    graph g(%x: f32[2]):
      %0: f32[2] = constant[value=tensor(f32[2], [1.0, -1.0])]()
      %1: f32[2] = neg(%0)
      return %1, %x
    """)
    r = fold_constants(g)
    assert r.graph.output_names() == g.output_names()
    assert [n.op for n in r.graph.nodes] == [ops.constant]
    np.testing.assert_array_equal(r.graph.nodes[0].attrs["value"], [-1.0, 1.0])


UNCHANGED = {
    # parameters change when the model trains
    "param": """
      graph g(%x: f32[2]):
        param %w: f32[2]
        %0: f32[2] = neg(%w)
        %1: f32[2] = add(%x, %0)
        return %1
    """,
    # a random op with a constant key is still not folded
    "stochastic": """
      graph g(%x: f32[4]):
        %0: i64[2] = constant[value=tensor(i64[2], [1, 2])]()
        %1: f32[4] = random_uniform[salt=0, dtype=f32](%x, %0)
        return %1
    """,
    # 5000 elements exceed the default limit of 4096
    "too_big": """
      graph g(%x: f32[5000]):
        %0: f32[] = constant[value=tensor(f32[], 1.0)]()
        %1: f32[5000] = expand[shape=(5000,)](%0)
        %2: f32[5000] = add(%x, %1)
        return %2
    """,
    # integer division by zero is an error at run time, not a folded value
    "int_div_zero": """
      graph g(%x: i64[2]):
        %0: i64[] = constant[value=tensor(i64[], 1)]()
        %1: i64[] = constant[value=tensor(i64[], 0)]()
        %2: i64[] = div(%0, %1)
        %3: i64[2] = add(%x, %2)
        return %3
    """,
}


@pytest.mark.parametrize("text", UNCHANGED.values(), ids=UNCHANGED.keys())
def test_fold_constants_leaves_alone(text: str) -> None:
    check_unchanged(fold_constants, text)


def test_size_limit_and_custom_evaluator() -> None:
    g = graph_of(UNCHANGED["too_big"])
    assert fold_constants(g, max_elements=10_000).stats == {"folded": 1, "dead_nodes": 1}
    calls: list[str] = []

    def kernels(node: Node, args: list[Any]) -> Any:
        calls.append(node.op.name)
        return KERNELS[node.op](*args, **node.attrs)

    # the evaluator is never asked about random ops
    assert fold_constants(graph_of(UNCHANGED["stochastic"]), evaluate=kernels).changed is False
    r = fold_constants(graph_of("""
    graph g(%x: f32[2]):
      %0: f32[2] = constant[value=tensor(f32[2], [0.0, 1.0])]()
      %1: f32[2] = erf(%0)
      %2: f32[2] = add(%x, %1)
      return %2
    """), evaluate=kernels)
    assert calls == ["erf"] and r.stats == {"folded": 1, "dead_nodes": 1}


def _node(op: Any, arrays: list[np.ndarray], **attrs: Any) -> Node:
    b = GraphBuilder("one")
    ins = [b.input(f"in{i}", a.dtype, a.shape) for i, a in enumerate(arrays)]
    with b:
        op(*ins, **attrs)
    return b.nodes[-1]


RNG = np.random.default_rng(0)
F = RNG.standard_normal((2, 3)).astype(np.float32)
G = RNG.standard_normal((2, 3)).astype(np.float32) + 2
I = RNG.integers(-7, 8, (2, 3)).astype(np.int64)
J = np.array([[3, -2, 5], [-4, 7, 2]], dtype=np.int64)
H = F.astype(np.float16)
SAMPLES = [
    (ops.add, [F, G], {}), (ops.sub, [I, J], {}), (ops.mul, [H, H], {}), (ops.div, [F, G], {}),
    (ops.div, [I, J], {}), (ops.pow_, [G, F], {}), (ops.pow_, [J, np.abs(J)], {}),
    (ops.maximum, [F, G], {}), (ops.neg, [I], {}), (ops.abs_, [F], {}), (ops.exp, [H], {}),
    (ops.log, [G], {}), (ops.sqrt, [G], {}), (ops.reciprocal, [F], {}), (ops.tanh, [F], {}),
    (ops.floor, [F], {}), (ops.round_, [G * 2], {}), (ops.relu, [H], {}),
    (ops.less, [F, G], {}), (ops.where, [F > 0, F, G], {}), (ops.cast, [F * 10], {"to": "i32"}),
    (ops.cast, [I], {"to": "bf16"}), (ops.reshape, [F], {"shape": (0, -1, 1)}),
    (ops.transpose, [F], {"perm": (1, 0)}), (ops.squeeze, [F[None]], {"axes": (0,)}),
    (ops.unsqueeze, [F], {"axes": (-1, 0)}), (ops.concat, [F, G], {"axis": -1}),
    (ops.slice_, [F], {"starts": (1, -2), "ends": (2**62, 3)}), (ops.split, [F], {"axis": 1,
     "split": (1, 2)}), (ops.expand, [F[:1]], {"shape": (4, 1, 3)}),
    (ops.tile, [F], {"repeats": (2, 1)}), (ops.gather, [F, J % 3], {"axis": 1}),
    (ops.full_like, [F], {"value": 2.5, "dtype": "i64"}), (ops.iota_like, [F], {"axis": -1}),
    (ops.iota_like, [F], {"axis": None}), (ops.broadcast_like, [F[:1], G], {}),
    (ops.reduce_max, [F], {"axes": (1,), "keepdims": False}),
    (ops.reduce_min, [F], {"axes": None, "keepdims": True}),
]


@pytest.mark.parametrize(("op", "arrays", "attrs"), SAMPLES,
                         ids=[f"{s[0].name}-{i}" for i, s in enumerate(SAMPLES)])
def test_folder_matches_kernel(op: Any, arrays: list[np.ndarray], attrs: dict[str, Any]) -> None:
    node = _node(op, arrays, **attrs)
    got = fold_node(node, arrays)
    want = KERNELS[op](*arrays, **node.attrs)
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    for g, w, v in zip(got_t, want_t, node.outputs, strict=True):
        g = np.asarray(g).astype(v.dtype.numpy)
        assert g.shape == np.asarray(w).shape
        np.testing.assert_array_equal(g, w)


def test_every_folder_is_sampled() -> None:
    assert {op for op in FOLDERS if op is not ops.identity} <= {s[0] for s in SAMPLES} | {
        ops.sin, ops.cos, ops.ceil, ops.minimum, ops.equal, ops.less_equal, ops.greater,
        ops.greater_equal, ops.logical_and, ops.logical_or, ops.logical_not, ops.bitwise_and,
        ops.bitwise_or, ops.bitwise_xor}
