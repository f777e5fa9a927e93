"""Symbolic tensors: operators, indexing, shape translations and error locations."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import DTypeError, GraphError, OpError, ShapeError
from lbdl_graph.frontends import F, InputSpec, MinMax, Tensor, nn, trace

from .helpers import rand


def _line(marker: str) -> int:
    """The line number of this file that holds ``marker`` (for source-location checks)."""
    with open(__file__) as f:
        for i, text in enumerate(f, 1):
            if marker in text and "_line(" not in text:
                return i
    raise AssertionError(marker)


def _eval(fn, *arrays, symbolic=False):
    specs = [InputSpec(("N", *a.shape[1:]) if symbolic else a.shape, a.dtype, f"a{i}")
             for i, a in enumerate(arrays)]
    g = trace(fn, specs)
    out = run(g, {f"a{i}": a for i, a in enumerate(arrays)})
    return g, (out["output"] if "output" in out else [out[f"output{i}"] for i in range(len(out))])


def test_arithmetic_with_reflected_scalars():
    x = rand(3, 4)
    _, out = _eval(lambda t: (2.0 - t, 1 / (t * t + 1), t**2, 3 + t * 0.5, -t, abs(t), t - 1),
                   x)
    ref = (2.0 - x, 1 / (x * x + 1), x**2, 3 + x * 0.5, -x, np.abs(x), x - 1)
    for o, r in zip(out, ref, strict=True):
        np.testing.assert_allclose(o, r, rtol=1e-6)
        assert o.dtype == np.float32


def test_scalar_constants_take_the_tensor_dtype():
    g, out = _eval(lambda t: t * 2, np.arange(6, dtype=np.int64).reshape(2, 3))
    assert out.dtype == np.int64
    consts = [n for n in g.nodes if n.op.name == "constant"]
    assert consts[0].attrs["value"].dtype == np.int64
    with pytest.raises(DTypeError, match="non-integer constant"):
        _eval(lambda t: t * 0.5, np.zeros((2,), dtype=np.int64))


def test_matmul_rmatmul_and_comparisons():
    a, b = rand(2, 3), rand(3, 4)
    _, out = _eval(lambda x, y: (x @ y, x > 0, x <= 0.5, x == x, x != 0), a, b)
    np.testing.assert_allclose(out[0], a @ b, rtol=1e-5)
    np.testing.assert_array_equal(out[1], a > 0)
    np.testing.assert_array_equal(out[2], a <= 0.5)
    assert out[3].all()
    np.testing.assert_array_equal(out[4], a != 0)


def test_integer_floor_division_and_mod_round_toward_minus_infinity():
    a = np.array([7, -7, 7, -7, 6], dtype=np.int64)
    b = np.array([2, 2, -2, -2, 3], dtype=np.int64)
    _, out = _eval(lambda x, y: (x // y, x % y, x / y), a, b)
    np.testing.assert_array_equal(out[0], a // b)
    np.testing.assert_array_equal(out[1], a % b)
    np.testing.assert_allclose(out[2], a / b, rtol=1e-6)
    assert out[2].dtype == np.float32


@pytest.mark.parametrize(
    ("index", "expected_shape"),
    [
        ((slice(None), 0), (4, 6)),
        ((Ellipsis, slice(1, 3)), (4, 5, 2)),
        ((-1,), (5, 6)),
        ((None, 1, slice(None), slice(None, None, -2)), (1, 5, 3)),
        ((slice(1, None), None, 2), (3, 1, 6)),
        ((Ellipsis, None), (4, 5, 6, 1)),
        ((0, -1, Ellipsis), (6,)),
    ],
    ids=["col0", "ellipsis-slice", "last", "none-int-reverse", "slice-none-int", "trailing-none",
         "int-int-ellipsis"],
)
def test_basic_indexing_matches_numpy(index, expected_shape):
    x = rand(4, 5, 6)
    g, out = _eval(lambda t: t[index], x)
    assert out.shape == expected_shape
    np.testing.assert_array_equal(out, x[index])
    assert tuple(g.outputs[0].type.shape) == expected_shape


def test_index_tensor_gathers_along_its_dim():
    x = rand(4, 5, 6)
    idx = np.array([[4, 0], [1, 1], [2, 3]], dtype=np.int64)
    _, out = _eval(lambda t, i: t[:, i], x, idx)
    np.testing.assert_array_equal(out, x[:, idx])
    _, out = _eval(lambda t: t[[3, 0]], x)
    np.testing.assert_array_equal(out, x[[3, 0]])


def test_indexing_errors_are_typed():
    x = rand(4, 5)
    with pytest.raises(ShapeError, match="data-dependent"):
        _eval(lambda t: t[t > 0], x)
    with pytest.raises(ShapeError, match="out of range"):
        _eval(lambda t: t[:, 7], x)
    with pytest.raises(ShapeError, match="too many indices"):
        _eval(lambda t: t[0, 0, 0], x)
    with pytest.raises(OpError, match="immutable"):
        _eval(lambda t: t.__setitem__(0, 1.0), x)


def test_symbolic_slicing_keeps_symbols():
    g, out = _eval(lambda t: t[:, 1:], rand(3, 5, 2), symbolic=True)
    assert g.outputs[0].type.shape == ("N", 4, 2)
    assert out.shape == (3, 4, 2)


def test_reshape_translates_symbolic_dims_to_copy_and_infer():
    x = rand(3, 4, 6)

    def fn(t):
        n = t.shape[0]
        return t.reshape(n, -1), t.view(n, 2, 12), t.reshape(-1, 6), t.flatten(1), \
            t.reshape("M", 24)

    g, out = _eval(fn, x, symbolic=True)
    shapes = [n.attrs["shape"] for n in g.nodes if n.op.name == "reshape"]
    assert shapes == [(0, -1), (0, 2, 12), (-1, 6), (0, 24), (-1, 24)]
    assert [tuple(v.type.shape) for v in g.outputs] == [("N", 24), ("N", 2, 12), ("N*4", 6),
                                                        ("N", 24), ("N", 24)]
    for o, r in zip(out, [x.reshape(3, -1), x.reshape(3, 2, 12), x.reshape(-1, 6),
                          x.reshape(3, -1), x.reshape(3, 24)], strict=True):
        np.testing.assert_array_equal(o, r)


def test_reshape_with_two_unknown_dims_is_rejected():
    with pytest.raises(ShapeError, match="only one can be inferred"):
        _eval(lambda t: t.reshape(-1, t.shape[0]), rand(3, 4), symbolic=True)


def test_transpose_permute_and_matrix_transposes():
    x = rand(2, 3, 4)
    _, out = _eval(lambda t: (t.transpose(0, 2), t.permute(1, 0, 2), t.T, t.mT,
                              t.unsqueeze(1), t[:, :1].squeeze(1), t[:, :1].squeeze()), x)
    ref = (x.transpose(2, 1, 0), x.transpose(1, 0, 2), x.transpose(2, 1, 0),
           x.transpose(0, 2, 1), x[:, None], x[:, 0], x[:, 0])
    for o, r in zip(out, ref, strict=True):
        np.testing.assert_array_equal(o, r)


def test_expand_keeps_minus_one_and_symbolic_dims():
    x = rand(3, 1, 4)
    g, out = _eval(lambda t: t.expand(-1, 5, 4), x, symbolic=True)
    assert g.outputs[0].type.shape == ("N", 5, 4)
    np.testing.assert_array_equal(out, np.broadcast_to(x, (3, 5, 4)))
    with pytest.raises(ShapeError, match="symbolic"):
        _eval(lambda t: t[:1].expand("N", 1, 4), x, symbolic=True)


def test_reductions_and_max_returns_values_and_indices():
    x = rand(3, 4)
    _, out = _eval(lambda t: (t.sum(), t.mean(1), t.sum((0, 1), keepdim=True), t.amax(0),
                              *t.max(1), t.argmax(), t.var(1), t.std(0, unbiased=False)), x)
    ref = (x.sum(), x.mean(1), x.sum(keepdims=True), x.max(0), x.max(1), x.argmax(1),
           x.argmax(), x.var(1, ddof=1), x.std(0))
    for o, r in zip(out, ref, strict=True):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)
    assert isinstance(trace(lambda t: (isinstance(t.max(0), MinMax) and t.max(0).values),
                            [(2, 2)]).outputs[0].type.shape, tuple)


def test_dtype_conversions_masked_fill_and_unary_methods():
    x = rand(2, 5)
    _, out = _eval(lambda t: (t.long(), t.float().to("float64"), t.masked_fill(t < 0, -9.0),
                              t.exp(), t.relu(), t.sigmoid(), t.tanh(), t.clamp(-0.5, 0.5)), x)
    assert out[0].dtype == np.int64 and out[1].dtype == np.float64
    np.testing.assert_array_equal(out[0], x.astype(np.int64))
    np.testing.assert_array_equal(out[2], np.where(x < 0, -9.0, x))
    np.testing.assert_allclose(out[3], np.exp(x), rtol=1e-6)
    np.testing.assert_array_equal(out[4], np.maximum(x, 0))
    np.testing.assert_allclose(out[5], 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(out[6], np.tanh(x), rtol=1e-6)
    np.testing.assert_array_equal(out[7], np.clip(x, -0.5, 0.5))


def test_metadata_properties():
    def fn(t):
        assert isinstance(t, Tensor)
        assert t.shape == ("N", 3, 4) and t.ndim == 3 and t.dim() == 3
        assert t.size(-1) == 4 and t.size(0) == "N" and t.dtype.name == "float32"
        return t

    trace(fn, [("N", 3, 4)])


def test_python_truth_value_of_a_tensor_is_an_error():
    def fn(t):
        if t > 0:  # data-dependent control flow
            return t
        return -t

    with pytest.raises(OpError, match="truth value"):
        trace(fn, [(2,)])


def test_ops_outside_a_trace_raise_a_graph_error():
    with pytest.raises(GraphError, match="outside a trace"):
        nn.Linear(2, 2)(None)


def test_broadcast_error_shows_both_shapes_and_the_user_line():
    def fn(a, b):
        return a + b  # broadcast-error-line

    with pytest.raises(ShapeError) as info:
        trace(fn, [(2, 3), (4,)])
    err = info.value
    assert err.source is not None
    assert err.source.file == __file__
    assert err.source.line == _line("# broadcast-error-line")
    text = str(err)
    assert "[2,3]" in text and "[4]" in text
    assert f"test_tensor.py:{_line('# broadcast-error-line')}" in text


def test_layer_shape_error_names_the_layer_and_the_user_line():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            h = self.body(x)
            return self.head(h)  # layer-error-line

    with pytest.raises(ShapeError) as info:
        trace(Net(), [("N", 5)])
    err = info.value
    assert err.source.file == __file__
    assert err.source.line == _line("# layer-error-line")
    assert err.node == "head"
    assert "f32[N,4]" in str(err) and "in_features=3" in str(err)


def test_functional_error_inside_nested_modules_names_the_module_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            return F.layer_norm(self.proj(x), 5)  # ln-error-line

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    with pytest.raises(ShapeError) as info:
        trace(Net(), [(2, 4)])
    assert info.value.node == "blocks.0"
    assert info.value.source.line == _line("# ln-error-line")


def test_numpy_operands_defer_to_the_tensor():
    x = rand(3)
    c = np.arange(3, dtype=np.float64)
    _, out = _eval(lambda t: (c + t, np.float32(2) * t, c > t), x)
    np.testing.assert_allclose(out[0], c.astype(np.float32) + x, rtol=1e-6)
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(out[1], 2 * x, rtol=1e-6)
    np.testing.assert_array_equal(out[2], c > x)
    with pytest.raises(OpError, match="symbolic"):
        trace(lambda t: np.asarray(t), [(2,)])
