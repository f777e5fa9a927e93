"""Linear, convolution and pooling layers against independent NumPy implementations."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.frontends import F, nn, trace

from .helpers import conv_ref, conv_transpose_ref, rand, run_model


def test_linear_matches_numpy_on_any_leading_dims():
    lin = nn.Linear(5, 3)
    x = rand(2, 4, 5)
    out = run_model(lin, x, symbolic=True)
    np.testing.assert_allclose(out, x @ lin.weight.data.T + lin.bias.data, rtol=1e-5, atol=1e-6)
    no_bias = nn.Linear(5, 2, bias=False)
    np.testing.assert_allclose(run_model(no_bias, x), x @ no_bias.weight.data.T, rtol=1e-5)


@pytest.mark.parametrize(
    ("kw", "shape"),
    [
        ({"stride": 1, "padding": 0}, (2, 4, 7, 6)),
        ({"stride": 2, "padding": 1}, (2, 4, 7, 6)),
        ({"stride": (2, 1), "padding": (0, 2), "dilation": (1, 2)}, (1, 4, 9, 8)),
        ({"groups": 2, "padding": 1}, (2, 4, 5, 5)),
        ({"padding": "same", "dilation": 2}, (1, 4, 8, 7)),
        ({"padding": "valid", "bias": False}, (1, 4, 6, 6)),
    ],
    ids=["plain", "stride-pad", "mixed-dilation", "groups", "same", "valid-nobias"],
)
def test_conv2d_matches_a_direct_loop(kw, shape):
    conv = nn.Conv2d(4, 6, (3, 2) if "dilation" in kw and kw.get("padding") != "same" else 3,
                     **kw)
    x = rand(*shape)
    out = run_model(conv, x)
    k = conv.kernel_size
    if conv.padding == "same":
        total = [d * (kk - 1) for d, kk in zip(conv.dilation, k, strict=True)]
        assert all(t % 2 == 0 for t in total)
        pad = [t // 2 for t in total]
    elif conv.padding == "valid":
        pad = [0, 0]
    else:
        pad = list(conv.padding)
    b = None if conv.bias is None else conv.bias.data
    ref = conv_ref(x, conv.weight.data, b, conv.stride, pad, conv.dilation, conv.groups)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_conv2d_same_padding_puts_the_extra_pixel_at_the_end():
    x = rand(1, 1, 5, 5)
    w = rand(1, 1, 4, 4)
    g = trace(lambda t: F.conv2d(t, w, padding="same"), [x.shape])
    (conv,) = [n for n in g.nodes if n.op.name == "conv"]
    assert conv.attrs["pads"] == (1, 1, 2, 2)


def test_conv1d_with_reflect_padding_mode_and_symbolic_length():
    conv = nn.Conv1d(3, 2, 3, padding=2, padding_mode="reflect", dilation=2)
    x = rand(2, 3, 9)
    g = trace(conv, [(2, 3, "L")])
    assert "L" in g.outputs[0].type.shape[2]
    out = run_model(conv, x)
    xp = np.pad(x, [(0, 0), (0, 0), (2, 2)], mode="reflect")
    ref = conv_ref(xp, conv.weight.data, conv.bias.data, (1,), (0,), (2,), 1)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_unbatched_conv_input():
    conv = nn.Conv1d(2, 3, 2)
    x = rand(2, 5)
    out = run_model(conv, x)
    ref = conv_ref(x[None], conv.weight.data, conv.bias.data, (1,), (0,), (1,), 1)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kw", "length"),
    [
        ({"stride": 2}, 5),
        ({"stride": 2, "padding": 1, "output_padding": 1}, 4),
        ({"stride": 3, "padding": 2, "output_padding": 2, "dilation": 2}, 3),
        ({"groups": 2, "stride": 2, "padding": 1}, 4),
    ],
    ids=["stride", "stride-pad-outpad", "dilation", "groups"],
)
def test_conv_transpose1d_matches_a_scatter_loop(kw, length):
    conv = nn.ConvTranspose1d(4, 6, 3, **kw)
    x = rand(2, 4, length)
    out = run_model(conv, x)
    ref = conv_transpose_ref(x, conv.weight.data, conv.bias.data, conv.stride, conv.padding,
                             conv.output_padding, conv.dilation, conv.groups)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_conv_transpose2d_upsamples_with_output_padding():
    conv = nn.ConvTranspose2d(3, 2, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2))
    x = rand(1, 3, 4, 3)
    out = run_model(conv, x)
    ref = conv_transpose_ref(x, conv.weight.data, conv.bias.data, (2, 3), (1, 0), (1, 2),
                             (1, 1), 1)
    assert out.shape == (1, 2, 8, 10) == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def _pool_ref(x, k, s, p, reduce, pad_value):
    xp = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in p], constant_values=pad_value)
    sp = [(xp.shape[2 + i] - k[i]) // s[i] + 1 for i in range(len(k))]
    out = np.zeros(x.shape[:2] + tuple(sp), dtype=np.float32)
    for o in np.ndindex(*sp):
        win = xp[(slice(None), slice(None),
                  *[slice(o[i] * s[i], o[i] * s[i] + k[i]) for i in range(len(k))])]
        out[(slice(None), slice(None), *o)] = reduce(win.reshape(*x.shape[:2], -1), axis=-1)
    return out


def test_max_and_avg_pooling():
    x = rand(2, 3, 7, 6)
    np.testing.assert_allclose(run_model(nn.MaxPool2d(2), x),
                               _pool_ref(x, (2, 2), (2, 2), (0, 0), np.max, -np.inf))
    np.testing.assert_allclose(run_model(nn.MaxPool2d(3, stride=2, padding=1), x),
                               _pool_ref(x, (3, 3), (2, 2), (1, 1), np.max, -np.inf))
    # PyTorch counts the zero padding in the divisor by default
    np.testing.assert_allclose(run_model(nn.AvgPool2d(3, stride=2, padding=1), x),
                               _pool_ref(x, (3, 3), (2, 2), (1, 1), np.mean, 0.0),
                               rtol=1e-5, atol=1e-6)
    y = rand(2, 3, 9)
    np.testing.assert_allclose(run_model(nn.MaxPool1d(3, 2), y),
                               _pool_ref(y, (3,), (2,), (0,), np.max, -np.inf))
    np.testing.assert_allclose(run_model(nn.AvgPool1d(2), y),
                               _pool_ref(y, (2,), (2,), (0,), np.mean, 0.0), rtol=1e-5)


def _adaptive_ref(x, out):
    n = x.shape[-1]
    return np.stack([x[..., (i * n) // out: -(-((i + 1) * n) // out)].mean(-1)
                     for i in range(out)], -1)


def test_adaptive_average_pooling_uses_pytorch_bins():
    x = rand(2, 3, 7)
    np.testing.assert_allclose(run_model(nn.AdaptiveAvgPool1d(3), x), _adaptive_ref(x, 3),
                               rtol=1e-5, atol=1e-6)
    z = rand(2, 3, 5, 8)
    ref = np.swapaxes(_adaptive_ref(np.swapaxes(_adaptive_ref(z, 4), 2, 3), 3), 2, 3)
    np.testing.assert_allclose(run_model(nn.AdaptiveAvgPool2d((3, 4)), z), ref, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(run_model(nn.AdaptiveAvgPool2d((1, 4)), z),
                               z.reshape(2, 3, 5, 4, 2).mean((2, 4))[:, :, None], rtol=1e-5,
                               atol=1e-6)
    g = trace(nn.AdaptiveAvgPool2d(1), [("N", 3, "H", "W")])
    assert g.outputs[0].type.shape == ("N", 3, 1, 1)
    np.testing.assert_allclose(run_model(nn.GlobalAvgPool(), z), z.mean((2, 3)), rtol=1e-5)


def test_activation_layers():
    x = rand(3, 5)
    cases = [
        (nn.ReLU(), np.maximum(x, 0)),
        (nn.LeakyReLU(0.2), np.where(x > 0, x, 0.2 * x)),
        (nn.Tanh(), np.tanh(x)),
        (nn.Sigmoid(), 1 / (1 + np.exp(-x))),
        (nn.SiLU(), x / (1 + np.exp(-x))),
        (nn.Softmax(-1), np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
        (nn.LogSoftmax(0), x - np.log(np.exp(x).sum(0, keepdims=True))),
        (nn.GELU(), 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))),
        (nn.GELU("tanh"), 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
        (nn.Identity(), x),
    ]
    for layer, ref in cases:
        np.testing.assert_allclose(run_model(layer, x), ref, rtol=1e-5, atol=1e-6,
                                   err_msg=type(layer).__name__)


def test_flatten_and_residual():
    x = rand(2, 3, 4, 5)
    np.testing.assert_array_equal(run_model(nn.Flatten(), x, symbolic=True), x.reshape(2, -1))
    np.testing.assert_array_equal(run_model(nn.Flatten(1, 2), x), x.reshape(2, 12, 5))
    body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
    res = nn.Residual(body)
    ref = np.maximum(conv_ref(x, body[0].weight.data, body[0].bias.data, (1, 1), (1, 1), (1, 1),
                              1), 0) + x
    np.testing.assert_allclose(run_model(res, x), ref, rtol=1e-4, atol=1e-5)
    proj = nn.Residual(nn.Conv2d(3, 5, 1), nn.Conv2d(3, 5, 1, bias=False))
    wb, ws = proj.body.weight.data[:, :, 0, 0], proj.skip.weight.data[:, :, 0, 0]
    ref = np.einsum("oc,nchw->nohw", wb + ws, x) + proj.body.bias.data[:, None, None]
    np.testing.assert_allclose(run_model(proj, x), ref, rtol=1e-4, atol=1e-5)
