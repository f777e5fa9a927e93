"""The autodiff driver: unbroadcasting, accumulation, what blocks gradients, higher order
(Hessian-vector products, a GAN gradient penalty), errors and source locations."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest

from lbdl_graph import OPS, AutodiffError, GraphBuilder, OpDef, Trait, defop, ops
from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.graph import Graph, Value
from lbdl_graph.passes.autodiff import differentiate, grad, sum_to, value_and_grad

Arrays = dict[str, np.ndarray]


def _scalar_sum(v: Value) -> Value:
    return ops.reduce_sum(v, axes=None, keepdims=False)  # type: ignore[no-any-return]


def _fd_grad(f: Callable[[Arrays], float], point: Arrays, name: str, eps: float = 1e-6
             ) -> np.ndarray:
    """Central-difference gradient of ``f`` w.r.t. ``point[name]``."""
    out = np.zeros_like(point[name])
    for i in range(out.size):
        hi = {k: v.copy() for k, v in point.items()}
        lo = {k: v.copy() for k, v in point.items()}
        hi[name].flat[i] += eps
        lo[name].flat[i] -= eps
        out.flat[i] = (f(hi) - f(lo)) / (2 * eps)
    return out


def _params_fn(graph: Graph, out: str, inputs: Arrays) -> Callable[[Arrays], float]:
    interp = Interpreter(graph)
    return lambda params: float(interp.run(inputs, params=params)[out])


# ---------------------------------------------------------------- unbroadcasting


def test_sum_to_sums_broadcast_axes_with_symbolic_batch() -> None:
    b = GraphBuilder("sum_to")
    g = b.input("g", "float64", ("N", 4, 10))
    with b:
        to_bias = sum_to(g, (10,))
        to_col = sum_to(g, (4, 1))
        same = sum_to(g, ("N", 4, 10))
        with pytest.raises(AutodiffError, match="does not broadcast"):
            sum_to(g, (3, 10))
    assert same is g and to_bias.shape == (10,) and to_col.shape == (4, 1)
    arr = np.random.default_rng(0).standard_normal((3, 4, 10))
    res = Interpreter(b.build([to_bias, to_col])).run({"g": arr})
    np.testing.assert_allclose(res[to_bias.name], arr.sum(axis=(0, 1)))
    np.testing.assert_allclose(res[to_col.name], arr.sum(axis=(0, 2))[:, None])


def test_bias_gradient_is_unbroadcast_for_any_batch_size() -> None:
    b = GraphBuilder("affine")
    x = b.input("x", "float64", ("N", 10))
    bias = b.param("bias", np.linspace(-1, 1, 10))
    scale = b.param("scale", np.asarray([[2.0]]))
    with b:
        y = ops.mul(ops.add(x, bias), scale)
        loss = _scalar_sum(ops.mul(y, y))
    g = grad(b.build({"loss": loss}))
    assert g.values["grad:bias"].shape == (10,) and g.values["grad:scale"].shape == (1, 1)
    for n in (1, 3, 5):
        xv = np.random.default_rng(n).standard_normal((n, 10))
        res = Interpreter(g).run({"x": xv})
        z = xv + np.linspace(-1, 1, 10)
        np.testing.assert_allclose(res["grad:bias"], (2 * 4.0 * z).sum(axis=0))
        np.testing.assert_allclose(res["grad:scale"], [[(2 * 2.0 * z * z).sum()]])


def test_reshape_gradient_with_two_symbolic_dims() -> None:
    b = GraphBuilder("flatten")
    x = b.input("x", "float64", ("N", "T", 3))
    with b:
        flat = ops.reshape(x, shape=(-1, 3))  # (N*T, 3): N and T cannot be split again
        loss = _scalar_sum(ops.mul(ops.exp(flat), ops.constant(value=np.arange(3.0))))
    g = grad(b.build({"loss": loss}), wrt="x")
    assert g.values["grad:x"].shape == ("N", "T", 3)
    xv = np.random.default_rng(0).standard_normal((2, 4, 3))
    np.testing.assert_allclose(Interpreter(g).run({"x": xv})["grad:x"],
                               np.exp(xv) * np.arange(3.0))


def test_slice_gradient_on_symbolic_axes() -> None:
    b = GraphBuilder("last_token")
    x = b.input("x", "float64", ("N", "T", 4))
    with b:
        last = ops.slice_(x, starts=(-1,), ends=(2**63 - 1,), axes=(1,))  # x[:, -1:]
        tail = ops.slice_(x, starts=(1, 1), ends=(2**63 - 1, 3), axes=(1, 2))  # x[:, 1:, 1:3]
        loss = ops.add(_scalar_sum(ops.exp(last)), _scalar_sum(ops.mul(tail, tail)))
    g = grad(b.build({"loss": loss}), wrt="x")
    xv = np.random.default_rng(1).standard_normal((2, 5, 4))
    want = np.zeros_like(xv)
    want[:, -1:] += np.exp(xv[:, -1:])
    want[:, 1:, 1:3] += 2 * xv[:, 1:, 1:3]
    np.testing.assert_allclose(Interpreter(g).run({"x": xv})["grad:x"], want)


# ---------------------------------------------------------------- accumulation and blocking


def test_fan_out_accumulates_cotangents() -> None:
    b = GraphBuilder("fanout")
    x = b.input("x", "float64", (5,))
    with b:
        loss = _scalar_sum(ops.add(ops.mul(x, x), ops.sin(x)))  # x is read three times
    g = grad(b.build({"loss": loss}), wrt="x")
    xv = np.linspace(-2, 2, 5)
    np.testing.assert_allclose(Interpreter(g).run({"x": xv})["grad:x"], 2 * xv + np.cos(xv))
    assert any(n.name.endswith("/accum") for n in g.nodes)


def test_stop_gradient_blocks_and_allow_unused_gives_zeros() -> None:
    b = GraphBuilder("stop")
    x = b.input("x", "float64", (4,))
    y = b.input("y", "float64", (4,))
    with b:
        loss = _scalar_sum(ops.add(ops.mul(x, ops.stop_gradient(x)), ops.stop_gradient(y)))
    graph = b.build({"loss": loss})
    with pytest.raises(AutodiffError, match="does not depend on 'y'"):
        grad(graph, wrt=["x", "y"])
    g = grad(graph, wrt=["x", "y"], allow_unused=True)
    xv = np.arange(4.0)
    res = Interpreter(g).run({"x": xv, "y": xv})
    np.testing.assert_allclose(res["grad:x"], xv)  # d(x * const) = const, not 2x
    np.testing.assert_allclose(res["grad:y"], np.zeros(4))


def test_frozen_params_are_excluded() -> None:
    b = GraphBuilder("frozen")
    x = b.input("x", "float64", (3,))
    w = b.param("w", np.ones(3))
    s = b.param("running", np.full(3, 2.0), trainable=False)
    with b:
        loss = _scalar_sum(ops.mul(ops.mul(x, w), s))
    graph = b.build({"loss": loss})
    g = grad(graph)
    assert g.output_names() == ["loss", "grad:w"]
    np.testing.assert_allclose(Interpreter(g).run({"x": np.arange(3.0)})["grad:w"],
                               2 * np.arange(3.0))
    with pytest.raises(AutodiffError, match="frozen"):
        grad(graph, wrt=["w", "running"])


def test_integer_values_carry_no_gradient() -> None:
    b = GraphBuilder("embed")
    idx = b.input("idx", "int64", ("N",))
    k = b.input("k", "int64", ())
    table = b.param("table", np.arange(12.0).reshape(4, 3))
    with b:
        rows = ops.gather(table, idx, axis=0)
        weight = ops.unsqueeze(ops.cast(ops.add(idx, k), to="float64"), axes=(1,))
        loss = _scalar_sum(ops.mul(rows, weight))
    graph = b.build({"loss": loss})
    with pytest.raises(AutodiffError, match="only float values"):
        grad(graph, wrt="idx")
    g = grad(graph)
    assert all(n.op is not ops.cast for n in g.nodes[len(graph.nodes):])
    res = Interpreter(g).run({"idx": np.asarray([1, 1, 3]), "k": np.asarray(1)})
    np.testing.assert_allclose(res["grad:table"][:, 0], [0.0, 4.0, 0.0, 4.0])


def test_mixed_precision_cast_returns_gradient_in_input_dtype() -> None:
    b = GraphBuilder("cast")
    x = b.input("x", "float32", (3,))
    with b:
        loss = _scalar_sum(ops.exp(ops.cast(x, to="float64")))
    g = grad(b.build({"loss": loss}), wrt="x")
    xv = np.asarray([0.5, -1.0, 2.0], dtype=np.float32)
    res = Interpreter(g).run({"x": xv})["grad:x"]
    assert res.dtype == np.float32
    np.testing.assert_allclose(res, np.exp(xv), rtol=1e-6)


def test_ties_split_the_cotangent() -> None:
    b = GraphBuilder("ties")
    x = b.input("x", "float64", (2, 3))
    y = b.input("y", "float64", (2, 3))
    with b:
        mx = _scalar_sum(ops.maximum(x, y))
        rmax = _scalar_sum(ops.reduce_max(x, axes=(1,), keepdims=False))
        rmin = _scalar_sum(ops.reduce_min(y, axes=None, keepdims=True))
        loss = ops.add(ops.add(mx, rmax), rmin)
    g = grad(b.build({"loss": loss}), wrt=["x", "y"])
    xv = np.asarray([[1.0, 5.0, 5.0], [2.0, 0.0, 2.0]])
    yv = np.asarray([[1.0, 0.0, 6.0], [0.0, 0.0, 3.0]])
    res = Interpreter(g).run({"x": xv, "y": yv})
    np.testing.assert_allclose(res["grad:x"], [[0.5, 1.5, 0.5], [1.5, 0.5, 0.5]])
    np.testing.assert_allclose(res["grad:y"], [[0.5, 1 / 3, 1.0], [1 / 3, 0.5 + 1 / 3, 1.0]])


# ---------------------------------------------------------------- higher order


def _mlp() -> Graph:
    rng = np.random.default_rng(0)
    b = GraphBuilder("mlp")
    x = b.input("x", "float64", ("N", 3))
    t = b.input("t", "float64", ("N", 1))
    w1 = b.param("w1", rng.standard_normal((3, 4)))
    b1 = b.param("b1", rng.standard_normal(4) * 0.1)
    w2 = b.param("w2", rng.standard_normal((4, 1)))
    with b:
        h = ops.tanh(ops.add(ops.matmul(x, w1), b1))
        err = ops.sub(ops.matmul(h, w2), t)
        loss = ops.reduce_mean(ops.mul(err, err), axes=None, keepdims=False)
    return b.build({"loss": loss})


def _inner_product(g1: Graph, vectors: Mapping[str, str], out: str) -> Graph:
    """``g1`` extended with ``out = sum_p <grad:p, v_p>`` (v_p are new inputs)."""
    b = GraphBuilder.from_graph(g1)
    with b:
        terms = []
        for p, vname in vectors.items():
            v = b.input(vname, "float64", g1.values[p].shape)
            terms.append(_scalar_sum(ops.mul(g1.values[f"grad:{p}"], v)))
        total = terms[0]
        for term in terms[1:]:
            total = ops.add(total, term)
    return b.build({out: total})


def test_hessian_vector_product_of_an_mlp_matches_finite_differences() -> None:
    graph = _mlp()
    names = ["w1", "b1", "w2"]
    g1 = grad(graph)
    hv_graph = grad(_inner_product(g1, {p: f"v:{p}" for p in names}, "gv"), "gv")
    assert hv_graph.metadata["grads"] == {p: f"grad:{p}_1" for p in names}
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((5, 3)), "t": rng.standard_normal((5, 1))}
    vs = {p: rng.standard_normal(g1.values[p].shape) for p in names}
    hvp = Interpreter(hv_graph).run({**data, **{f"v:{p}": v for p, v in vs.items()}})
    first = Interpreter(g1)
    params = graph.param_arrays()
    eps = 1e-5
    up = first.run(data, params={p: params[p] + eps * vs[p] for p in names})
    down = first.run(data, params={p: params[p] - eps * vs[p] for p in names})
    for p in names:
        fd = (up[f"grad:{p}"] - down[f"grad:{p}"]) / (2 * eps)
        np.testing.assert_allclose(hvp[f"grad:{p}_1"], fd, rtol=1e-6, atol=1e-8)


def test_gan_gradient_penalty_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(2)
    b = GraphBuilder("critic")
    x = b.input("x", "float64", ("N", 3))
    w1 = b.param("w1", rng.standard_normal((3, 5)))
    b1 = b.param("b1", rng.standard_normal(5) * 0.1)
    w2 = b.param("w2", rng.standard_normal((5,)))
    with b:
        score = ops.matmul(ops.softplus(ops.add(ops.matmul(x, w1), b1)), w2)  # D(x): (N,)
        total = _scalar_sum(score)
    dx = grad(b.build({"d": total}), "d", wrt="x")
    pb = GraphBuilder.from_graph(dx)
    with pb:
        gx = dx.values["grad:x"]  # (N, 3): dD(x_n)/dx_n, rows are independent
        norm = ops.sqrt(ops.reduce_sum(ops.mul(gx, gx), axes=(1,), keepdims=False))
        dev = ops.sub(norm, ops.constant(value=np.asarray(1.0)))
        gp = ops.reduce_mean(ops.mul(dev, dev), axes=None, keepdims=False)
    penalty = pb.build({"gp": gp})
    g = grad(penalty, "gp")  # w.r.t. D's parameters, through the gradient graph
    xv = {"x": rng.standard_normal((4, 3))}
    res = Interpreter(g).run(xv)
    f = _params_fn(penalty, "gp", xv)
    params = penalty.param_arrays()
    for p in ("w1", "b1", "w2"):
        np.testing.assert_allclose(res[f"grad:{p}"], _fd_grad(f, params, p), rtol=1e-6,
                                   atol=1e-8)


# ---------------------------------------------------------------- errors and locations


def _line_of_next_statement() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def test_non_scalar_loss_names_the_output_and_shape() -> None:
    b = GraphBuilder("vec")
    x = b.input("x", "float64", ("N", 2))
    with b:
        y = ops.exp(x)
    with pytest.raises(AutodiffError, match=r"loss 'y' must be a scalar, got shape \[N,2\]"):
        grad(b.build({"y": y}), "y", wrt="x")


def test_unknown_or_unrelated_names_are_errors() -> None:
    b = GraphBuilder("two")
    x = b.input("x", "float64", (2,))
    b.input("unrelated", "float64", (2,))
    with b:
        loss = _scalar_sum(ops.exp(x))
    graph = b.build({"loss": loss})
    with pytest.raises(AutodiffError, match="does not depend on 'unrelated'"):
        grad(graph, wrt=["x", "unrelated"])
    with pytest.raises(AutodiffError, match="unknown wrt 'nope'"):
        grad(graph, wrt="nope")
    with pytest.raises(AutodiffError, match="unknown loss 'cost'"):
        grad(graph, "cost", wrt="x")
    with pytest.raises(AutodiffError, match="no trainable float parameters"):
        grad(graph)


def test_op_without_vjp_names_node_op_and_source_line() -> None:
    no_vjp = OpDef("test_no_vjp", ("x",), lambda x: x, traits=frozenset({Trait.DIFFERENTIABLE}))
    b = GraphBuilder("missing")
    x = b.input("x", "float64", (2,))
    with b:
        line = _line_of_next_statement()
        y = no_vjp(x, name="mystery")
        loss = _scalar_sum(y)
    graph = b.build({"loss": loss}, verify=False)  # the op is not registered in OPS
    with pytest.raises(AutodiffError, match="no VJP rule") as err:
        grad(graph, wrt="x")
    e = err.value
    assert (e.node, e.op) == ("mystery", "test_no_vjp")
    assert e.source is not None and e.source.line == line
    assert f"test_autodiff.py:{line}" in str(e)


def test_gradient_nodes_carry_the_forward_source_line() -> None:
    b = GraphBuilder("located")
    x = b.input("x", "float64", (3,))
    with b, b.scope("block"):
        line = _line_of_next_statement()
        y = ops.tanh(ops.mul(x, x))
        loss = _scalar_sum(y)
    g = grad(b.build({"loss": loss}), wrt="x")
    grad_nodes = [n for n in g.nodes if n.name.startswith("grad/block/tanh/")]
    assert grad_nodes and all(n.source is not None and n.source.line == line
                              for n in grad_nodes)
    assert any(n.name.startswith("grad/block/mul/") for n in g.nodes)


# ---------------------------------------------------------------- decompositions and fused ops


@pytest.fixture
def x_sin_x() -> Iterator[OpDef]:
    """A test-only op without a VJP rule but with a decomposition (registered temporarily)."""
    op = defop("test_x_sin_x", ("x",), infer=lambda x: x, traits=(Trait.DIFFERENTIABLE,),
               decompose=lambda x: ops.mul(x, ops.sin(x)))
    yield op
    del OPS[op.name]


def test_op_without_rule_is_differentiated_through_its_decomposition(x_sin_x: OpDef) -> None:
    b = GraphBuilder("decomposed")
    x = b.input("x", "float64", (4,))
    with b:
        loss = _scalar_sum(x_sin_x(x))
    result = differentiate(b.build({"loss": loss}), wrt="x")
    assert result.changed and result.stats["decomposed"] == 1
    xv = np.linspace(-1.0, 2.0, 4)
    got = Interpreter(result.graph).run({"x": xv})["grad:x"]
    np.testing.assert_allclose(got, np.sin(xv) + xv * np.cos(xv))



def _check_inputs_grad(graph: Graph, feeds: Arrays, wrt: list[str], rtol: float = 1e-6) -> None:
    """``grad`` w.r.t. the inputs ``wrt`` against central differences of the loss."""
    g = grad(graph, "loss", wrt)
    res = Interpreter(g).run(feeds)
    interp = Interpreter(graph)

    def f(point: Arrays) -> float:
        return float(interp.run(point)["loss"])

    for n in wrt:
        np.testing.assert_allclose(res[f"grad:{n}"], _fd_grad(f, feeds, n), rtol=rtol,
                                   atol=1e-8, err_msg=n)


def _random_loss_graph(name: str, shapes: Mapping[str, tuple[int, ...]],
                       body: Callable[..., Value]) -> tuple[Graph, Arrays]:
    """``loss = sum(body(*inputs) * c)`` for a fixed random c, and random float64 feeds."""
    rng = np.random.default_rng(3)
    b = GraphBuilder(name)
    ins = [b.input(n, "float64", s) for n, s in shapes.items()]
    with b:
        out = body(*ins)
        c = ops.constant(value=rng.standard_normal(out.shape))
        loss = _scalar_sum(ops.mul(out, c))
    return b.build({"loss": loss}), {n: rng.standard_normal(s) for n, s in shapes.items()}


FUSED: dict[str, tuple[dict[str, tuple[int, ...]], Callable[..., Value]]] = {
    "linear_gelu": ({"x": (2, 3), "w": (3, 4), "b": (4,)},
                    lambda x, w, b: ops.linear(x, w, b, activation="gelu")),
    "fused_conv_residual": ({"x": (1, 2, 5, 5), "w": (2, 2, 3, 3), "r": (1, 2, 3, 3)},
                            lambda x, w, r: ops.fused_conv(x, w, None, r, strides=(1, 1))),
    "attention_causal_mask": ({"q": (2, 3, 4), "k": (2, 3, 4), "v": (2, 3, 2), "m": (3, 3)},
                              lambda q, k, v, m: ops.attention(q, k, v, m, causal=True)),
    "fused_elementwise": ({"a": (2, 3), "b": (3,)}, lambda a, b: ops.fused_elementwise(
        a, b, program=(("mul", (0, 1), ()), ("tanh", (2,), ()), ("add", (3, 0), ())))),
}


@pytest.mark.parametrize("case", sorted(FUSED))
def test_fused_ops_differentiate_through_their_decomposition(case: str) -> None:
    shapes, body = FUSED[case]
    graph, feeds = _random_loss_graph(case, shapes, body)
    _check_inputs_grad(graph, feeds, list(shapes))


SCATTERS: dict[str, tuple[Callable[..., Value], np.ndarray]] = {
    "elements_none_dups": (lambda d, i, u: ops.scatter_elements(d, i, u, axis=1), np.asarray(
        [[0, 2, 0], [1, 1, 3]])),
    "elements_mul_dups": (lambda d, i, u: ops.scatter_elements(
        d, i, u, axis=1, reduction="mul"), np.asarray([[0, 2, 0], [1, 1, 3]])),
    "elements_max_dups": (lambda d, i, u: ops.scatter_elements(
        d, i, u, axis=1, reduction="max"), np.asarray([[0, 2, 0], [1, 1, 3]])),
    "elements_min": (lambda d, i, u: ops.scatter_elements(
        d, i, u, axis=1, reduction="min"), np.asarray([[0, 2, 1], [1, 0, 3]])),
    "nd_none_dups": (lambda d, i, u: ops.scatter_nd(d, i, u), np.asarray([[[1], [0], [1]]])),
    "nd_mul": (lambda d, i, u: ops.scatter_nd(d, i, u, reduction="mul"),
               np.asarray([[[1], [0], [1]]])),
    "nd_max_pairs": (lambda d, i, u: ops.scatter_nd(d, i, u, reduction="max"),
                     np.asarray([[[1, 2]], [[0, 0]]])),
}


@pytest.mark.parametrize("case", sorted(SCATTERS))
def test_scatter_reductions_match_finite_differences(case: str) -> None:
    body, idx = SCATTERS[case]
    nd = case.startswith("nd")
    k = idx.shape[-1] if nd else 0
    data_shape = (2, 4)
    upd_shape = idx.shape[:-1] + data_shape[k:] if nd else idx.shape
    rng = np.random.default_rng(4)
    b = GraphBuilder(case)
    d = b.input("d", "float64", data_shape)
    u = b.input("u", "float64", upd_shape)
    i = b.input("i", "int64", idx.shape)
    with b:
        out = body(d, i, u)
        loss = _scalar_sum(ops.mul(out, ops.constant(value=rng.standard_normal(data_shape))))
    feeds = {"d": rng.uniform(0.5, 2.0, data_shape), "u": rng.uniform(0.5, 2.0, upd_shape),
             "i": idx}
    _check_inputs_grad(b.build({"loss": loss}), feeds, ["d", "u"])


def test_symbolic_batch_conv_and_pool_gradients_match_static_ones() -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 1, 3, 3))

    def model(batch: int | str) -> Graph:
        b = GraphBuilder("cnn")
        x = b.input("x", "float64", (batch, 2, 6, 7))
        wp = b.param("w", w)
        with b:
            xp = ops.pad(x, pads=(0, 0, 1, 0, 0, 0, 0, 0), mode="reflect")
            y = ops.conv(ops.pad(xp, pads=(0, 0, 0, 0, 0, 0, 1, 1)), wp, None, strides=(2, 2),
                         pads=(0, 1, 0, 1), group=2)
            p, _ = ops.max_pool(ops.relu(y), kernel_shape=(2, 2), strides=(1, 1))
            a = ops.avg_pool(p, kernel_shape=(2, 2), pads=(1, 1, 0, 0), ceil_mode=True)
            z = ops.reshape(a, shape=(0, -1))
            loss = _scalar_sum(ops.mul(z, z))
        return b.build({"loss": loss})

    xv = {"x": rng.standard_normal((3, 2, 6, 7))}
    sym = Interpreter(grad(model("N"), wrt=["x", "w"])).run(xv)
    static = Interpreter(grad(model(3), wrt=["x", "w"])).run(xv)
    for name in ("grad:x", "grad:w"):
        np.testing.assert_allclose(sym[name], static[name], rtol=1e-12)
    f = _params_fn(model(3), "loss", xv)
    np.testing.assert_allclose(static["grad:w"], _fd_grad(f, {"w": w}, "w"), rtol=1e-5,
                               atol=1e-7)


def test_value_and_grad_keeps_only_loss_and_gradients() -> None:
    graph = _mlp()
    vg = value_and_grad(graph, wrt=["w2"])
    assert vg.output_names() == ["loss", "grad:w2"]
    assert {p.name for p in vg.params} == {"w1", "b1", "w2"}
    data = {"x": np.ones((2, 3)), "t": np.zeros((2, 1))}
    full = Interpreter(grad(graph)).run(data)
    res = Interpreter(vg).run(data)
    np.testing.assert_allclose(res["grad:w2"], full["grad:w2"])
    np.testing.assert_allclose(res["loss"], full["loss"])


def test_fake_quantize_uses_straight_through_and_learnable_scale_gradients() -> None:
    b = GraphBuilder("qat")
    x = b.input("x", "float64", (2, 4))
    s = b.input("s", "float64", (2, 1))
    z = b.input("z", "float64", ())
    c = b.input("c", "float64", (2, 4))
    with b:
        loss = _scalar_sum(ops.mul(ops.fake_quantize(x, s, z, qmin=-4, qmax=3), c))
    g = grad(b.build({"loss": loss}), wrt=["x", "s", "z"])
    xv = np.asarray([[-3.0, -0.26, 0.4, 2.0], [0.05, -1.3, 0.9, -0.05]])
    sv, zv = np.asarray([[0.5], [0.25]]), np.asarray(1.0)
    cv = np.random.default_rng(6).standard_normal((2, 4))
    res = Interpreter(g).run({"x": xv, "s": sv, "z": zv, "c": cv})
    code = np.rint(xv / sv) + zv
    inside = (code >= -4) & (code <= 3)
    y = (np.clip(code, -4, 3) - zv) * sv
    d_scale = np.where(inside, (y - xv) / sv, np.where(code < -4, -4 - zv, 3 - zv))
    assert not inside.all() and inside.any()
    np.testing.assert_allclose(res["grad:x"], cv * inside)
    np.testing.assert_allclose(res["grad:s"], (cv * d_scale).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(res["grad:z"], (cv * np.where(inside, 0.0, -sv)).sum())
