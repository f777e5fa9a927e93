"""Recurrent layers at a symbolic sequence length: one ``scan`` per layer and direction, equal
to the unrolled graph, torch and ONNX Runtime at several lengths; gradients through the reverse
scan against the unrolled graph's, finite differences and ORT; a training step at two lengths."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.backends.numpy.stateful import NumpyStepRunner
from lbdl_graph.errors import LbdlError, ShapeError
from lbdl_graph.frontends import Tensor, manual_seed, nn, trace
from lbdl_graph.frontends.module import Module
from lbdl_graph.graph import Graph
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.optim import SGD
from lbdl_graph.passes.train_step import TrainStep, make_train_step

LAYERS = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
LENGTHS = (3, 7, 20)
WRT = ["x", "weight_hh_l0", "weight_ih_l1_reverse", "bias_hh_l0_reverse"]


def _model(kind: str, **kw: object) -> Module:
    manual_seed(1)
    m: Module = LAYERS[kind](5, 4, num_layers=2, batch_first=True, bidirectional=True, **kw)
    return m


def _x(length: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(length).normal(size=(batch, length, 5)).astype(np.float32)


def _ops(g: Graph) -> list[str]:
    return [n.op.name for n in g.nodes]


def _loss_fn(m: Module) -> Callable[[Tensor], dict[str, Tensor]]:
    def loss(x: Tensor) -> dict[str, Tensor]:
        out = m(x)
        y, finals = out[0], out[1]
        total = (y * y).sum()
        for f in finals if isinstance(finals, tuple) else (finals,):
            total = total + (f * f).sum() * 0.5
        return {"loss": total}

    return loss


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_symbolic_length_traces_one_scan_per_layer_and_direction(kind: str) -> None:
    m = _model(kind)
    g = trace(m, [("N", "T", 5)], training=False)
    scans = [n for n in g.nodes if n.op.name == "scan"]
    assert len(scans) == 4
    assert [n.attrs["scan_input_directions"] for n in scans] == [None, (1,), None, (1,)]
    carried = 2 if kind == "LSTM" else 1
    made = {o: n for n in g.nodes for o in n.outputs}
    for n in scans:  # states, the projected inputs, then w_hh^T and b_hh as captures
        assert n.attrs["num_captures"] == 2
        assert len(n.inputs) == carried + 3
        w_t = made[n.inputs[carried + 1]]
        assert w_t.op.name == "transpose" and w_t.inputs[0].name.startswith("weight_hh_l")
        assert n.inputs[carried + 2].name.startswith("bias_hh_l")
        assert len(n.attrs["body"].nodes) < 30
        assert "transpose" not in _ops(n.attrs["body"])
    assert g.outputs[0].type.shape == ("N", "T", 8)
    assert "scan" not in _ops(trace(m, [(2, 4, 5)], training=False))
    assert _ops(trace(_model(kind, unroll=False), [(2, 4, 5)])).count("scan") == 4


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_numpy_at_three_lengths_equals_the_unrolled_graphs(kind: str) -> None:
    m = _model(kind)
    g = trace(m, [("N", "T", 5)], training=False)
    for length in LENGTHS:
        x = _x(length)
        got = run(g, {"x": x})
        want = run(trace(m, [(2, length, 5)], training=False), {"x": x})
        assert list(got) == list(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_numpy_and_ort_at_three_lengths_equal_torch(kind: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import onnx

    from lbdl_graph.backends.onnx import OrtRunner, to_onnx
    from lbdl_graph.frontends.onnx import import_onnx

    m = _model(kind)
    g = trace(m, [("N", "T", 5)], training=False)
    model = to_onnx(g, training=False)
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", "T", 5]
    assert [n.op_type for n in model.graph.node].count("Scan") == 4
    ort = OrtRunner(model)
    back = import_onnx(model)  # the ONNX Scan reads back as our scan
    assert _ops(back).count("scan") == 4
    ref = getattr(torch.nn, kind)(5, 4, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, p in m.named_parameters():
            getattr(ref, name).copy_(torch.from_numpy(np.array(p.data)))
    for length in LENGTHS:
        x = _x(length, batch=3)
        ours, theirs = run(g, {"x": x}), ort.run({"x": x})
        again = run(back, {"x": x}) if length == LENGTHS[0] else ours
        with torch.no_grad():
            y, h = ref(torch.from_numpy(x))
        want = [y.numpy(), *(t.numpy() for t in (h if isinstance(h, tuple) else (h,)))]
        for i, w in enumerate(want):
            np.testing.assert_allclose(ours[f"output{i}"], w, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(theirs[f"output{i}"], w, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(again[f"output{i}"], w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_gradients_at_symbolic_length_equal_the_unrolled_ones(kind: str, training: bool) -> None:
    m = _model(kind)
    fwd = trace(_loss_fn(m), [("N", "T", 5)], module=m, training=training)
    carried = 2 if kind == "LSTM" else 1
    bodies = [n.attrs["body"] for n in fwd.nodes if n.op.name == "scan"]
    assert {len(b.outputs) for b in bodies} == {carried * (2 if training else 1) + 1}
    gg = grad(fwd, "loss", WRT)
    scans = [n.name for n in gg.nodes if n.op.name == "scan"]
    # training mode stores the carries: 4 forward + 4 reverse scans; else 4 more recompute them
    assert len(scans) == (8 if training else 12)
    assert sum("carries" in n for n in scans) == (0 if training else 4)
    ort = None
    if importlib.util.find_spec("onnxruntime") is not None:
        from lbdl_graph.backends.onnx import OrtRunner

        ort = OrtRunner(gg, training=False)
    for length in (3, 7):
        x = _x(length)
        got = run(gg, {"x": x})
        unrolled = trace(_loss_fn(m), [(2, length, 5)], module=m, training=training)
        want = run(grad(unrolled, "loss", WRT), {"x": x})
        from_ort = ort.run({"x": x}) if ort is not None else want
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)
            np.testing.assert_allclose(from_ort[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)


def _numeric(loss: Callable[[], float], arr: np.ndarray, idx: tuple[int, ...]) -> float:
    eps = 1e-3
    keep = float(arr[idx])
    arr[idx] = keep + eps
    up = loss()
    arr[idx] = keep - eps
    down = loss()
    arr[idx] = keep
    return (up - down) / (2 * eps)


@pytest.mark.parametrize(("kind", "training"), [("GRU", False), ("LSTM", True)])
def test_reverse_scan_gradients_match_finite_differences(kind: str, training: bool) -> None:
    m = _model(kind)
    gg = grad(trace(_loss_fn(m), [("N", "T", 5)], module=m, training=training), "loss",
              ["x", "weight_hh_l0_reverse", "bias_ih_l1"])
    params = dict(m.named_parameters())
    rng = np.random.default_rng(0)
    for length in (5,):
        x = (_x(length) * 0.5).astype(np.float64)
        got = run(gg, {"x": x.astype(np.float32)})

        def loss(x: np.ndarray = x) -> float:
            return float(run(gg, {"x": x.astype(np.float32)})["loss"])

        for _ in range(3):
            idx = tuple(int(rng.integers(d)) for d in x.shape)
            assert got["grad:x"][idx] == pytest.approx(_numeric(loss, x, idx), rel=2e-2,
                                                       abs=2e-3)
        for name in ("weight_hh_l0_reverse", "bias_ih_l1"):
            w = params[name].data
            idx = tuple(int(rng.integers(d)) for d in w.shape)
            w64 = w.astype(np.float64)

            def loss_w(name: str = name, w64: np.ndarray = w64, x: np.ndarray = x,
                       length: int = length) -> float:
                params[name].data = w64.astype(np.float32)
                g = trace(_loss_fn(m), [(2, length, 5)], module=m, training=False)
                return float(run(g, {"x": x.astype(np.float32)})["loss"])

            num = _numeric(loss_w, w64, idx)
            params[name].data = w
            assert got[f"grad:{name}"][idx] == pytest.approx(num, rel=2e-2, abs=2e-3)


def _train_step() -> tuple[TrainStep, list[dict[str, np.ndarray]]]:
    """An LSTM regression step traced at symbolic length, and batches of lengths 5 and 9."""
    manual_seed(0)
    m = nn.LSTM(5, 6, batch_first=True)
    head = nn.Linear(6, 1)

    def loss_fn(x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out, _ = m(x)
        err = head(out) - y
        return {"loss": (err * err).mean()}

    root = nn.ModuleDict({"rnn": m, "head": head})
    ts = make_train_step(trace(loss_fn, [("N", "T", 5), ("N", "T", 1)], module=root,
                               training=True), SGD(lr=0.1))
    rng = np.random.default_rng(0)
    batches = []
    for length in (5, 9):
        x = rng.normal(size=(8, length, 5)).astype(np.float32)
        batches.append({"x": x, "y": np.cumsum(x[..., :1], axis=1) * 0.3})
    return ts, batches


def test_training_step_at_symbolic_length_learns_at_two_lengths() -> None:
    ts, batches = _train_step()
    assert "scan" in _ops(ts.graph)
    runner = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    first = [float(runner.step(b)["loss"]) for b in batches]
    for _ in range(30):
        for b in batches:
            runner.step(b)
    last = [float(runner.step(b)["loss"]) for b in batches]
    assert all(b < 0.7 * a for a, b in zip(first, last, strict=True))


def test_training_step_at_symbolic_length_agrees_on_ort() -> None:
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx.stateful import OrtStatefulRunner

    ts, batches = _train_step()
    ours = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    theirs = OrtStatefulRunner(ts.graph, {s: f"{s}:next" for s in ts.info.state},
                               init=ts.initial_state)
    for b in batches * 2:
        np.testing.assert_allclose(theirs.step(b)["loss"], ours.step(b)["loss"], rtol=1e-5,
                                   atol=1e-6)
    sa, sb = ours.state(), theirs.state()
    for k in ts.info.params:
        np.testing.assert_allclose(sb[k], sa[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_bad_input_is_a_typed_error_naming_the_layer() -> None:
    with pytest.raises(LbdlError, match="unroll"):
        nn.LSTM(3, 4, unroll="yes")  # type: ignore[arg-type]
    m = nn.GRU(3, 4)
    with pytest.raises(ShapeError, match=r"GRU layer 0 \(the scan body.*5 vs 4") as e:
        trace(lambda x, h: m(x, h), [("T", "N", 3), (1, "N", 5)], module=m)
    assert e.value.node == "scan_l0" and e.value.source is not None


@pytest.mark.parametrize("training", [False, True])
def test_second_order_through_the_reverse_scan(training: bool) -> None:
    """d/dx sum(grad_x^2): the reverse scan's own VJP (a scan of the gradient body)."""
    from lbdl_graph import ops
    from lbdl_graph.builder import GraphBuilder

    manual_seed(0)
    m = nn.GRU(3, 4, batch_first=True)
    g1 = grad(trace(_loss_fn(m), [("N", "T", 3)], module=m, training=training), "loss", ["x"])
    b = GraphBuilder.from_graph(g1)
    with b:
        gx = g1.outputs[[v.name for v in g1.outputs].index("grad:x")]
        s = ops.reduce_sum(ops.mul(gx, gx), axes=None, keepdims=False)
    g2 = b.build({"s": s})
    gg = grad(g2, "s", ["x"])
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    got = run(gg, {"x": x})[gg.metadata["grads"]["x"]]
    for idx in ((1, 2, 0),):
        num = _numeric(lambda x=x: float(run(g2, {"x": x})["s"]), x, idx)
        assert got[idx] == pytest.approx(num, rel=2e-2, abs=2e-3)


def test_recurrent_lm_with_dropout_trains_at_symbolic_length_on_both_backends() -> None:
    """The zoo's tied 2-layer LSTM LM (dropout between layers), Adam, lengths 6 and 11."""
    pytest.importorskip("onnxruntime")
    from lbdl_graph.backends.onnx.stateful import OrtStatefulRunner
    from lbdl_graph.frontends import InputSpec
    from lbdl_graph.frontends import functional as F
    from lbdl_graph.frontends.zoo.rnn_lm import RecurrentLM, RNNLMConfig
    from lbdl_graph.passes.optim import Adam

    manual_seed(0)
    m = RecurrentLM(RNNLMConfig(vocab_size=40, embed_dim=16, hidden_size=16, num_layers=2,
                                cell="lstm", dropout=0.2, tie_weights=True))

    def loss_fn(idx: Tensor, tgt: Tensor) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(m(idx).reshape(-1, 40), tgt.reshape(-1))}

    ids = InputSpec(("N", "T"), "int64")
    ts = make_train_step(trace(loss_fn, [ids, ids], module=m, training=True), Adam(lr=1e-2))
    assert _ops(ts.graph).count("scan") == 4  # 2 forward, 2 reverse
    ours = NumpyStepRunner(ts.graph, ts.info.state, ts.initial_state)
    theirs = OrtStatefulRunner(ts.graph, {s: f"{s}:next" for s in ts.info.state},
                               init=ts.initial_state)
    rng = np.random.default_rng(0)
    for length in (6, 11, 6):
        idx = rng.integers(0, 40, size=(3, length))
        feeds = {"idx": idx, "tgt": np.roll(idx, -1, 1)}
        np.testing.assert_allclose(theirs.step(feeds)["loss"], ours.step(feeds)["loss"],
                                   rtol=1e-5, atol=1e-6)


def test_given_initial_state_at_symbolic_length() -> None:
    manual_seed(0)
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True)

    def f(x: Tensor, h: Tensor, c: Tensor) -> object:
        return m(x, (h, c))

    state = [(4, "N", 4), (4, "N", 4)]
    g = trace(f, [("T", "N", 3), *state], module=m, training=False)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(6, 2, 3)).astype(np.float32),
             "h": rng.normal(size=(4, 2, 4)).astype(np.float32),
             "c": rng.normal(size=(4, 2, 4)).astype(np.float32)}
    got = run(g, feeds)
    want = run(trace(f, [(6, "N", 3), *state], module=m, training=False), feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)
