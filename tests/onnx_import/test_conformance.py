"""A fast sample of the ONNX backend node tests, run by benchmarks/onnx_conformance.py's runner,
and an optional torch.onnx round trip."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends.onnx import import_onnx

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = [
    # as is
    "test_add_bcast", "test_gemm_default_vector_bias", "test_conv_with_strides_padding",
    "test_convtranspose_pad", "test_maxpool_2d_pads",
    "test_maxpool_with_argmax_2d_precomputed_pads", "test_averagepool_3d_dilations_small",
    "test_batchnorm_example", "test_layer_normalization_4d_axis1", "test_softmax_large_number",
    "test_argmin_keepdims_random_select_last_index", "test_scatternd_add",
    "test_gathernd_example_int32", "test_equal", "test_bitshift_left_uint8", "test_celu",
    "test_mod_mixed_sign_int32", "test_qlinearmatmul_3D_int8_float16",
    "test_simple_rnn_bidirectional", "test_lstm_with_peepholes", "test_cast_FLOAT_to_BFLOAT16",
    # function bodies and folded shape computations
    "test_attention_4d_softcap", "test_sce_mean_weight_ii_3d_log_prob",
    "test_nllloss_NCd1_weight_ii", "test_layer_normalization_2d_axis_negative_2_expanded",
    # shape operands frozen with constant_inputs
    "test_center_crop_pad_crop_expanded", "test_reshape_negative_extended_dims",
    "test_slice_default_steps", "test_resize_downsample_sizes_linear_antialias",
    "test_resize_tf_crop_and_resize_axes_2_3", "test_top_k",
]
EXCLUDED = {"test_sequence_insert_at_back": "sequence/optional types",
            "test_unique_sorted_with_axis": "unsupported op Unique",
            "test_add_uint16": "unsupported dtype uint16"}


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("onnx_conformance",
                                                  ROOT / "benchmarks" / "onnx_conformance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["onnx_conformance"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path]:
    oc = _runner()
    found = oc.existing_node_data()  # shipped with onnx, or cached by the benchmark
    if found is not None:
        return oc, found
    out = tmp_path_factory.mktemp("node")
    oc.generate_node_data(out, set(SAMPLE) | set(EXCLUDED))
    return oc, out


def test_conformance_sample(suite: tuple[ModuleType, Path]) -> None:
    oc, data = suite
    results = [oc.run_test(data / name) for name in SAMPLE]
    bad = {r.name: r.detail for r in results if r.status not in ("passed", "specialised")}
    assert not bad
    frozen = {r.name for r in results if r.status == "specialised"}
    assert frozen == {"test_center_crop_pad_crop_expanded",
                      "test_reshape_negative_extended_dims", "test_slice_default_steps",
                      "test_resize_downsample_sizes_linear_antialias",
                      "test_resize_tf_crop_and_resize_axes_2_3", "test_top_k"}


def test_exclusions_carry_reasons(suite: tuple[ModuleType, Path]) -> None:
    oc, data = suite
    for name, reason in EXCLUDED.items():
        r = oc.run_test(data / name)
        assert (r.status, r.detail) == ("excluded", reason)


def test_runner_detects_wrong_outputs(suite: tuple[ModuleType, Path]) -> None:
    oc, _ = suite
    want = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert oc.compare(want, want + 1e-9, "y") is None
    assert "values differ" in oc.compare(want, want * 1.01 + 0.1, "y")
    assert "shape" in oc.compare(want, want.T, "y")
    assert "dtype" in oc.compare(want, want.astype(np.float64), "y")


@pytest.mark.filterwarnings("ignore")  # torch exporter and tracer chatter
def test_torch_exported_cnn(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 4 * 4, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.pool(torch.relu(self.bn(self.conv(x))))
            return torch.softmax(self.fc(torch.flatten(h, 1)), dim=-1)

    net = Net().eval()
    x = torch.randn(2, 1, 8, 8)
    path = tmp_path / "cnn.onnx"
    kw = {"input_names": ["x"], "output_names": ["y"], "dynamic_axes": {"x": {0: "batch"}},
          "opset_version": 17}
    try:
        try:
            torch.onnx.export(net, (x,), str(path), dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(net, (x,), str(path), **kw)
    except ImportError as e:  # the exporter's own optional dependencies
        pytest.skip(f"torch.onnx.export needs {e.name}")
    g = import_onnx(path)
    assert g.inputs[0].shape[0] == "batch"
    for batch in (2, 3):
        xb = np.random.default_rng(batch).normal(size=(batch, 1, 8, 8)).astype(np.float32)
        want = net(torch.from_numpy(xb)).detach().numpy()
        np.testing.assert_allclose(run(g, {"x": xb})["y"], want, rtol=1e-4, atol=1e-5)
        ref = ReferenceEvaluator(str(path)).run(None, {"x": xb})[0]
        np.testing.assert_allclose(ref, want, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore")  # torch exporter and tracer chatter
def test_torch_exported_attention_lstm_with_dynamic_batch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.norm = nn.Linear(16, 16), nn.LayerNorm(16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.lstm = nn.LSTM(16, 8, batch_first=True)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.norm(self.proj(x))
            a, _ = self.attn(h, h, h)
            y, _ = self.lstm(a)
            return nn.functional.gelu(y).reshape(x.shape[0], -1)

    net = Net().eval()
    path = tmp_path / "attn.onnx"
    try:
        torch.onnx.export(net, (torch.randn(2, 5, 16),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=18)
    except (ImportError, TypeError) as e:
        pytest.skip(f"this torch cannot export with the TorchScript exporter: {e}")
    g = import_onnx(path)
    assert g.inputs[0].shape == ("batch", 5, 16)
    for batch in (1, 3):
        xb = np.random.default_rng(batch).normal(size=(batch, 5, 16)).astype(np.float32)
        want = net(torch.from_numpy(xb)).detach().numpy()
        np.testing.assert_allclose(run(g, {"x": xb})["y"], want, rtol=1e-4, atol=1e-5)
