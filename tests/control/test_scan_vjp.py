"""The scan VJP (a reverse scan) at a symbolic length with non-default layouts: scan axis 1,
reversed input, outputs stacked on the last axis and reversed, a capture returned as an output;
against central differences, and the same graph at a static length."""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad


def _body() -> Graph:
    bb = GraphBuilder("cell")
    h = bb.input("h", "float32", [2, 4])
    x = bb.input("x", "float32", [2, 3])
    w = bb.input("w", "float32", [3, 4])
    with bb:
        hn = ops.tanh(ops.add(ops.mul(h, h), ops.matmul(x, w)))
        y = ops.mul(hn, hn)
    return bb.build([hn, y, w])


def _graph(length: object) -> Graph:
    b = GraphBuilder("g")
    xs = b.input("xs", "float32", [2, length, 3])
    h0 = b.input("h0", "float32", [2, 4])
    w = b.param("w", np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 0.5)
    with b:
        h_t, ys, ws = ops.scan(h0, xs, w, body=_body(), num_scan_inputs=1, num_captures=1,
                               scan_input_axes=[1], scan_input_directions=[1],
                               scan_output_axes=[-1, 0], scan_output_directions=[0, 1])
        sq = ops.reduce_sum(ops.mul(ys, ys), axes=None, keepdims=False)
        loss = ops.add(sq, ops.add(ops.reduce_sum(h_t, axes=None, keepdims=False),
                                   ops.reduce_sum(ops.mul(ws, ws), axes=None, keepdims=False)))
    return b.build({"loss": loss, "ys": ys})


def test_scan_vjp_with_layouts_matches_finite_differences_and_static_length() -> None:
    g = _graph("T")
    assert [str(v.type) for v in g.outputs] == ["f32[]", "f32[2,4,T]"]
    gg = grad(g, "loss", ["xs", "h0", "w"])
    rng = np.random.default_rng(1)
    feeds = {"xs": rng.normal(size=(2, 5, 3)).astype(np.float32) * 0.5,
             "h0": rng.normal(size=(2, 4)).astype(np.float32) * 0.5}
    got = run(gg, feeds)
    static = run(grad(_graph(5), "loss", ["xs", "h0", "w"]), feeds)
    for k in ("grad:xs", "grad:h0", "grad:w"):
        np.testing.assert_allclose(got[k], static[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for name in ("xs", "h0"):
        a = feeds[name]
        for idx in [tuple(int(rng.integers(d)) for d in a.shape) for _ in range(6)]:
            keep = float(a[idx])
            a[idx] = keep + 1e-3
            up = float(run(g, feeds)["loss"])
            a[idx] = keep - 1e-3
            down = float(run(g, feeds)["loss"])
            a[idx] = keep
            np.testing.assert_allclose(got[f"grad:{name}"][idx], (up - down) / 2e-3,
                                       rtol=2e-2, atol=2e-3, err_msg=f"{name}{idx}")
