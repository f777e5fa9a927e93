"""Data-parallel parity: N ranks with per-rank batch B/N match one process with batch B.

After 20 steps the parameter vectors agree within 1e-5 relative (||a - b|| / ||b||); with SGD
every tensor agrees elementwise within 1e-5 too. (Adam divides each gradient element by its own
running scale, so the few elements whose gradient is rounding noise, such as attention's key
bias whose exact gradient is zero, move differently under any change of summation order.)
"""

from __future__ import annotations

import pytest

from .helpers import last_json, mpirun

CASES = {
    2: ["mlp:sgd:numpy", "mlp:adam:numpy", "lenet:sgd:numpy+overlap", "lenet:adam:onnxruntime",
        "gpt_mini:adam:numpy", "gpt_mini:sgd:onnxruntime"],
    4: ["mlp:adam:onnxruntime", "lenet:adam:numpy", "gpt_mini:adam:onnxruntime"],
}


@pytest.mark.parametrize("ranks", sorted(CASES))
def test_parity_with_one_process(ranks: int) -> None:
    r = mpirun(ranks, "parity.py", *CASES[ranks], "--steps", "20", "--batch", "8", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    out = last_json(r.stdout)
    assert out["world_size"] == ranks
    assert [c["case"] for c in out["results"]] == [c.replace(":", "/") for c in CASES[ranks]]
    for c in out["results"]:
        assert c["steps"] == 20, c
        assert c["moved"] > 1e-3, c  # the parameters really trained
        assert c["rel"] <= 1e-5, c
        if "/sgd/" in c["case"]:
            assert c["max_rel"] <= 1e-5, c
        if "+overlap" in c["case"]:
            assert c["buckets"] >= 4, c  # several buckets, each started during the backward
