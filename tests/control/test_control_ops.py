"""Control-flow ops: printing, verifying, kernels against ONNX Runtime and onnx.reference,
gradients (numerical check) and typed errors naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lbdl_graph import ops
from lbdl_graph.backends.numpy import run
from lbdl_graph.backends.onnx import to_onnx
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import AutodiffError, LbdlError
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.eliminate_common_subexpressions import eliminate_common_subexpressions
from lbdl_graph.passes.eliminate_dead_code import eliminate_dead_code
from lbdl_graph.text import parse_graph, print_graph
from lbdl_graph.verify import verify

ort = pytest.importorskip("onnxruntime")


def _rnn_body(batch: object = 2) -> Graph:
    bb = GraphBuilder("cell")
    h = bb.input("h", "float32", [batch, 4])
    x = bb.input("x", "float32", [batch, 3])
    w = bb.input("w", "float32", [3, 4])
    with bb:
        hn = ops.tanh(ops.add(h, ops.matmul(x, w)))
    return bb.build([hn, hn])


def _rnn(length: object = 5, batch: object = 2, reverse: bool = False) -> Graph:
    b = GraphBuilder("rnn")
    h0 = b.input("h0", "float32", [batch, 4])
    xs = b.input("xs", "float32", [length, batch, 3])
    w = b.param("w", np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32))
    with b:
        h_t, hs = ops.scan(h0, xs, w, body=_rnn_body(batch), num_scan_inputs=1, num_captures=1,
                           scan_input_directions=[1] if reverse else None)
        loss = ops.add(ops.reduce_sum(ops.mul(hs, hs), axes=None, keepdims=False),
                       ops.reduce_sum(h_t, axes=None, keepdims=False))
    return b.build({"h_t": h_t, "hs": hs, "loss": loss})


def _ref_rnn(h: np.ndarray, xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = []
    for x in xs:
        h = np.tanh(h + x @ w)
        out.append(h)
    return np.stack(out)


def _loop(trips: int = 4) -> Graph:
    bb = GraphBuilder("step")
    bb.input("i", "int64", [])
    c = bb.input("c", "bool", [])
    acc = bb.input("acc", "float32", [3])
    x = bb.input("x", "float32", [3])
    with bb:
        nxt = ops.add(ops.mul(acc, x), x)
        keep = ops.identity(c)
    body = bb.build([keep, nxt, nxt])
    b = GraphBuilder("looped")
    x0 = b.input("x0", "float32", [3])
    with b:
        m = ops.constant(value=np.asarray(trips, dtype=np.int64))
        acc0 = ops.full_like(x0, value=1.0)
        fin, ys = ops.loop(m, None, acc0, x0, body=body, num_carried=1, trip_dim=trips)
        loss = ops.reduce_sum(ops.add(ops.reduce_sum(ys, axes=(0,), keepdims=False), fin),
                              axes=None, keepdims=False)
    return b.build({"fin": fin, "ys": ys, "loss": loss})


def _if() -> Graph:
    def branch(name: str, neg: bool) -> Graph:
        bb = GraphBuilder(name)
        x = bb.input("x", "float32", ["N"])
        with bb:
            y = ops.neg(x) if neg else ops.mul(x, x)
        return bb.build([y])

    b = GraphBuilder("choose")
    p = b.input("p", "bool", [1])
    x = b.input("x", "float32", ["N"])
    with b:
        (y,) = ops.if_(p, x, then_branch=branch("then", True), else_branch=branch("else", False))
    return b.build({"y": y})


def _ort(graph: Graph, feeds: dict[str, np.ndarray], reference: bool = True
         ) -> list[np.ndarray]:
    model = to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 13
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    from onnx.reference import ReferenceEvaluator

    got = sess.run(None, feeds)
    ref = ReferenceEvaluator(model).run(None, feeds) if reference else got
    for a, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
    return list(got)


def test_print_parse_round_trip_with_nested_blocks() -> None:
    g = _rnn()
    text = print_graph(g)
    assert "body = graph cell(%h: f32[2,4], %x: f32[2,3], %w: f32[3,4]):" in text
    assert text.count("  }") == 1
    again = parse_graph(text, {"w": g.params[0].data})
    assert print_graph(again) == text


def test_scan_kernel_matches_reference_ort_and_onnx_reference() -> None:
    rng = np.random.default_rng(1)
    for length, reverse in ((1, False), (5, False), (7, True)):
        g = _rnn(length, reverse=reverse)
        feeds = {"h0": rng.normal(size=(2, 4)).astype(np.float32),
                 "xs": rng.normal(size=(length, 2, 3)).astype(np.float32)}
        res = run(g, feeds)
        xs = feeds["xs"][::-1] if reverse else feeds["xs"]
        want = _ref_rnn(feeds["h0"], xs, g.params[0].data)
        np.testing.assert_allclose(res["hs"], want, rtol=1e-5, atol=1e-6)
        got = _ort(g, feeds, reference=not reverse)  # onnx.reference: forward scans only
        np.testing.assert_allclose(got[1], res["hs"], rtol=1e-5, atol=1e-6)


def test_scan_with_symbolic_length_runs_at_three_lengths() -> None:
    g = _rnn("T", "B")
    rng = np.random.default_rng(2)
    for length in (1, 3, 8):
        feeds = {"h0": np.zeros((3, 4), np.float32),
                 "xs": rng.normal(size=(length, 3, 3)).astype(np.float32)}
        res = run(g, feeds)
        assert res["hs"].shape == (length, 3, 4)
        np.testing.assert_allclose(_ort(g, feeds)[1], res["hs"], rtol=1e-5, atol=1e-6)


def test_loop_and_if_kernels_match_ort() -> None:
    x0 = np.array([0.5, -1.0, 2.0], np.float32)
    res = run(_loop(), {"x0": x0})
    acc, ys = np.ones(3, np.float32), []
    for _ in range(4):
        acc = acc * x0 + x0
        ys.append(acc)
    np.testing.assert_allclose(res["ys"], np.stack(ys), rtol=1e-6)
    # onnx.reference cannot run a Loop without its cond input: ORT only
    np.testing.assert_allclose(_ort(_loop(), {"x0": x0}, reference=False)[1], res["ys"],
                               rtol=1e-6)
    x = np.array([1.0, -2.0, 3.0], np.float32)
    for flag, want in ((True, -x), (False, x * x)):
        p = np.array([flag])
        np.testing.assert_array_equal(run(_if(), {"p": p, "x": x})["y"], want)
        np.testing.assert_array_equal(_ort(_if(), {"p": p, "x": x})[0], want)


def test_passes_see_captures_and_stay_idempotent() -> None:
    g = _rnn()
    for p in (eliminate_dead_code, eliminate_common_subexpressions):
        r = p(g)
        assert not r.changed and r.graph is g  # the capture of w is a use: nothing is dead
    b = GraphBuilder("dup")
    xs = b.input("xs", "float32", [5, 2, 3])
    h0 = b.input("h0", "float32", [2, 4])
    w = b.param("w", np.ones((3, 4), np.float32))
    body = _rnn_body()
    with b:
        a = ops.scan(h0, xs, w, body=body, num_scan_inputs=1, num_captures=1)[0]
        c = ops.scan(h0, xs, w, body=body, num_scan_inputs=1, num_captures=1)[0]
        unused = ops.scan(h0, xs, w, body=body, num_scan_inputs=1, num_captures=1)[0]
    del unused
    g2 = b.build([ops_add(b, a, c)])
    merged = eliminate_common_subexpressions(eliminate_dead_code(g2).graph)
    assert merged.graph.op_counts()["scan"] == 1
    assert not eliminate_common_subexpressions(merged.graph).changed


def ops_add(b: GraphBuilder, x: object, y: object) -> object:
    with b:
        return ops.add(x, y)


def _numeric_grad(g: Graph, feeds: dict[str, np.ndarray], name: str, eps: float = 1e-3
                  ) -> np.ndarray:
    g64 = g
    base = dict(feeds)
    arr = base[name].astype(np.float64)
    out = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        vals = []
        for s in (eps, -eps):
            a = arr.copy()
            a[idx] += s
            base[name] = a.astype(np.float32)
            vals.append(float(run(g64, base)["loss"]))
        out[idx] = (vals[0] - vals[1]) / (2 * eps)
    return out


def test_scan_and_loop_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(3)
    g = _rnn(4)
    feeds = {"h0": rng.normal(size=(2, 4)).astype(np.float32) * 0.3,
             "xs": rng.normal(size=(4, 2, 3)).astype(np.float32) * 0.3}
    gg = grad(g, "loss", ["xs", "h0", "w"])
    res = run(gg, feeds)
    for name in ("xs", "h0"):
        np.testing.assert_allclose(res[f"grad:{name}"], _numeric_grad(g, feeds, name),
                                   rtol=2e-2, atol=2e-3)
    gl = _loop()
    x0 = {"x0": np.array([0.5, -0.7, 0.9], np.float32)}
    got = run(grad(gl, "loss", ["x0"]), x0)["grad:x0"]
    np.testing.assert_allclose(got, _numeric_grad(gl, x0, "x0"), rtol=1e-2, atol=1e-3)


def test_gradient_errors_name_the_node() -> None:
    b = GraphBuilder("g")
    x = b.input("x", "float32", ["N"])
    sub = _if().nodes[0]
    with b:
        p = ops.constant(value=np.array([True]))
        (y,) = ops.if_(p, x, name="pick", then_branch=sub.attrs["then_branch"],
                       else_branch=sub.attrs["else_branch"])
        loss = ops.reduce_sum(y, axes=None, keepdims=False)
    with pytest.raises(AutodiffError, match="'if' is not supported") as e3:
        grad(b.build({"loss": loss}), "loss", ["x"])
    assert e3.value.node == "pick"


def test_bad_bodies_raise_typed_errors_naming_the_node() -> None:
    body = _rnn_body()
    b = GraphBuilder("bad")
    h0 = b.input("h0", "float32", [2, 5])
    xs = b.input("xs", "float32", [5, 2, 3])
    w = b.input("w", "float32", [3, 4])
    with b, pytest.raises(LbdlError, match="input 0") as e:
        ops.scan(h0, xs, w, body=body, num_scan_inputs=1, num_captures=1, name="my_scan")
    assert e.value.node == "my_scan"
    with b, pytest.raises(LbdlError, match="expects graph"):
        ops.scan(h0, xs, w, body="not a graph", num_scan_inputs=1, num_captures=1)
    g = _rnn()
    node = g.nodes[0]
    inner = node.attrs["body"]
    # the body returns an outer value it did not capture: the closed-body check refuses it
    broken = inner.replace(outputs=(g.inputs[0], g.inputs[0]))
    from dataclasses import replace

    bad = g.replace(nodes=[replace(node, attrs={**node.attrs, "body": broken}), *g.nodes[1:]])
    verify(g)
    with pytest.raises(LbdlError, match="body body: graph output %h0") as e2:
        verify(bad)
    assert e2.value.node == node.name


def test_onnx_round_trip_imports_the_bodies() -> None:
    from lbdl_graph.frontends.onnx import import_onnx

    rng = np.random.default_rng(5)
    for g, feeds in ((_rnn(), {"h0": rng.normal(size=(2, 4)).astype(np.float32),
                               "xs": rng.normal(size=(5, 2, 3)).astype(np.float32)}),
                     (_loop(), {"x0": np.array([0.5, -1.0, 2.0], np.float32)}),
                     (_if(), {"p": np.array([False]), "x": np.array([1.0, 2.0], np.float32)})):
        back = import_onnx(to_onnx(g))
        want, got = run(g, feeds), run(back, feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_dropout_inside_a_body_follows_the_outer_mode() -> None:
    """Evaluation mode reaches the bodies: a scan whose cell drops out is exact at eval, and
    drops (some zeros) in training, on NumPy; ONNX Runtime agrees at eval."""
    bb = GraphBuilder("cell")
    h = bb.input("h", "float32", [2, 8])
    x = bb.input("x", "float32", [2, 8])
    key = bb.input("key", "int64", [2])
    with bb:
        hn = ops.dropout(ops.tanh(ops.add(h, x)), key, ratio=0.5)
    body = bb.build([hn, hn])
    b = GraphBuilder("rnn")
    h0 = b.input("h0", "float32", [2, 8])
    xs = b.input("xs", "float32", [3, 2, 8])
    k = b.input("k", "int64", [2])
    with b:
        _, hs = ops.scan(h0, xs, k, body=body, num_scan_inputs=1, num_captures=1)
    g = b.build({"hs": hs})
    rng = np.random.default_rng(0)
    feeds = {"h0": rng.standard_normal((2, 8)).astype(np.float32),
             "xs": rng.standard_normal((3, 2, 8)).astype(np.float32), "k": np.asarray([7, 0])}
    want, hh = [], feeds["h0"]
    for xt in feeds["xs"]:
        hh = np.tanh(hh + xt)
        want.append(hh)
    np.testing.assert_allclose(run(g, feeds, training=False)["hs"], np.stack(want), rtol=1e-6)
    assert (run(g, feeds, training=True)["hs"] == 0).any()
    sess = ort.InferenceSession(to_onnx(g, training=False).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, feeds)[0], np.stack(want), rtol=1e-6)
