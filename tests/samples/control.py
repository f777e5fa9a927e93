"""Samples of the control-flow ops (if, loop, scan), with bodies as nested graphs.

The oracle is a plain Python loop over the same formula; tests/control checks the ops against
ONNX Runtime and ``onnx.reference`` as well. Scan is differentiated (an unrolled VJP), so its
samples are float64 and go into the gradient checks; loop's VJP needs its trip count to be a
constant node, not a fed input, so tests/control checks it; ``if`` has no gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.graph import Graph
from tests.op_db import OpSample

__all__ = ["SAMPLES"]


def _cell(dt: str) -> Graph:
    """h, x, w -> tanh(h + x @ w), emitted twice (carried state and stacked output)."""
    bb = GraphBuilder("cell")
    h = bb.input("h", dt, [2, 4])
    x = bb.input("x", dt, [2, 3])
    w = bb.input("w", dt, [3, 4])
    with bb:
        hn = ops.tanh(ops.add(h, ops.matmul(x, w)))
    return bb.build([hn, hn])


def _rnn_ref(reverse: bool) -> Any:
    def ref(h: np.ndarray, xs: np.ndarray, w: np.ndarray, **_: Any) -> tuple[np.ndarray, ...]:
        outs = []
        for x in (xs[::-1] if reverse else xs):
            h = np.tanh(h + x @ w)
            outs.append(h)
        return h, np.stack(outs)
    return ref


def _step(dt: str) -> Graph:
    """i, cond, acc, x -> cond, acc * x + x (carried), acc * x + x (stacked)."""
    bb = GraphBuilder("step")
    bb.input("i", "int64", [])
    c = bb.input("c", "bool", [])
    acc = bb.input("acc", dt, [3])
    x = bb.input("x", dt, [3])
    with bb:
        nxt = ops.add(ops.mul(acc, x), x)
        keep = ops.identity(c)
    return bb.build([keep, nxt, nxt])


def _loop_ref(m: np.ndarray, cond: None, acc: np.ndarray, x: np.ndarray, **_: Any
              ) -> tuple[np.ndarray, ...]:
    outs = []
    for _i in range(int(m)):
        acc = acc * x + x
        outs.append(acc)
    return acc, np.stack(outs)


def _branch(name: str, neg: bool) -> Graph:
    bb = GraphBuilder(name)
    x = bb.input("x", "float32", [5])
    with bb:
        y = ops.neg(x) if neg else ops.mul(x, x)
    return bb.build([y])


def _rnn_inputs(rng: np.random.Generator) -> list[np.ndarray | None]:
    return [rng.standard_normal((2, 4)), rng.standard_normal((5, 2, 3)) * 0.5,
            rng.standard_normal((3, 4)) * 0.5]


def _loop_inputs(rng: np.random.Generator) -> list[np.ndarray | None]:
    return [np.asarray(4, np.int64), None, rng.uniform(0.5, 1.0, 3),
            rng.uniform(-0.8, 0.8, 3)]


SAMPLES: list[OpSample] = [
    OpSample(ops.scan, _rnn_inputs, attrs={"body": _cell("float64"), "num_scan_inputs": 1,
                                           "num_captures": 1},
             label="rnn", reference=_rnn_ref(False), grad_inputs=[0, 1, 2], rtol=1e-10),
    OpSample(ops.scan, _rnn_inputs, attrs={"body": _cell("float64"), "num_scan_inputs": 1,
                                           "num_captures": 1, "scan_input_directions": (1,)},
             label="rnn_reversed", reference=_rnn_ref(True), grad_inputs=[0, 1, 2]),
    OpSample(ops.loop, _loop_inputs, attrs={"body": _step("float64"), "num_carried": 1,
                                            "trip_dim": 4},
             label="static_trips", reference=_loop_ref, grad=False),
    *(OpSample(ops.if_, lambda rng, p=p: [np.asarray([p]), rng.standard_normal(5)
                                          .astype(np.float32)],
               attrs={"then_branch": _branch("then", True),
                      "else_branch": _branch("else", False)}, label=f"take_{p}",
               reference=lambda c, x, **_: -x if c[0] else x * x, grad=False)
      for p in (True, False)),
]
