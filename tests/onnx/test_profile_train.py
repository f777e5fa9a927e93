"""benchmarks/profile_train.py on the MLP: the profile parses and its tables add up."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest

from lbdl_graph.backends.onnx.runner import OrtRunner
from lbdl_graph.errors import OnnxError
from lbdl_graph.frontends import InputSpec, manual_seed, nn, trace

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("profile_train")
    finally:
        sys.path.remove(str(BENCH))


def test_profile_tables_sum() -> None:
    pt = _load()
    res = pt.profile("mlp", threads=1, steps=2, depth=2, gemm_size=128)
    assert res["profiled_steps"] == 2
    for key in ("by_op", "by_scope"):
        rows = res[key]
        assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-9)
        assert sum(r["ms"] for r in rows) == pytest.approx(res["kernel_ms_per_step"], rel=1e-9)
        assert all(r["count"] > 0 and r["mb"] >= 0 for r in rows)
    ops = {r["op"]: r for r in res["by_op"]}
    assert ops.keys() & pt.GEMM_OPS  # the MLP's layers are GEMMs
    # the same nodes are counted in both tables
    assert sum(r["count"] for r in res["by_op"]) == sum(r["count"] for r in res["by_scope"])
    scopes = {r["scope"] for r in res["by_scope"]}
    assert any(s.startswith("optim") for s in scopes) and any("grad" in s for s in scopes)
    assert 0 < res["gemm_time_share"] <= 1
    # 784-256-256-10: 269,322 parameters, batch 64
    assert res["train_gflop_per_step"] == pytest.approx(6 * 269322 * 64 / 1e9)
    assert res["gemm_ceiling_gflops"] > 0 and res["ceiling_share"] > 0
    assert "GEMM ceiling" in pt.report(res, 5)


def test_parse_profile_needs_two_runs() -> None:
    pt = _load()
    with pytest.raises(RuntimeError, match="model runs"):
        pt.parse_profile([{"cat": "Session", "name": "model_run", "ts": 0, "dur": 1}], {})


def test_session_options_hook() -> None:
    manual_seed(0)
    g = trace(nn.Linear(4, 3), {"x": InputSpec(("N", 4))})
    x = np.ones((2, 4), np.float32)
    plain = OrtRunner(g).run({"x": x})["output"]
    r = OrtRunner(g, session_options={"session.intra_op.allow_spinning": "0",
                                      "enable_mem_pattern": False})
    np.testing.assert_array_equal(r.run({"x": x})["output"], plain)
    assert isinstance(r.session.get_session_options(), ort.SessionOptions)
    with pytest.raises(OnnxError, match="unknown session option 'no_such'"):
        OrtRunner(g, session_options={"no_such": 1})
