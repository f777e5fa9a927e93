"""Data-parallel parity: N ranks with per-rank batch B/N match one process with batch B.

After 20 steps the parameter vectors agree within 1e-5 relative (||a - b|| / ||b||) and the
loss of both on a fresh batch within 1e-5. Elementwise (max |a - b| / max |b| per tensor) they
agree within 1e-5 with SGD, and with Adam in float64 (``f64``). Adam in float32 is checked in
norm only: it divides each gradient element by its own running scale, so an element whose
gradient is a cancellation (attention's key bias and a bias before BatchNorm have an exact
gradient of zero) turns float32 rounding, which any change of summation order changes, into a
step of up to the learning rate; in float64 the rounding stays below Adam's epsilon and the
same runs agree within 1e-9 elementwise. ``sync`` cases trace batch norm with statistics
all-reduced over the ranks and are compared with plain batch norm on the global batch; the
default (per-rank statistics, as PyTorch DDP) is shown to differ from it.
"""

from __future__ import annotations

import pytest

from .helpers import last_json, mpirun

CASES = {
    2: ["mlp:sgd:numpy", "mlp:adam:numpy:f64", "lenet:sgd:numpy+overlap",
        "lenet:adam:onnxruntime", "lenet:adam:numpy:f64", "gpt_mini:adam:numpy",
        "gpt_mini:adam:numpy:f64", "gpt_mini:sgd:onnxruntime", "bn:sgd:numpy:sync",
        "bn:sgd:onnxruntime:sync", "bn:adam:numpy:sync+f64", "bn:adam:onnxruntime:sync+f64",
        "bn:sgd:numpy"],
    4: ["mlp:adam:onnxruntime", "lenet:adam:numpy", "gpt_mini:adam:onnxruntime",
        "gpt_mini:adam:numpy:f64", "bn:sgd:onnxruntime:sync", "bn:adam:numpy:sync+f64"],
}


def _name(case: str) -> str:
    model, opt, backend, *flags = case.split(":")
    return "/".join([model, opt, backend, *flags])


@pytest.mark.parametrize("ranks", sorted(CASES))
def test_parity_with_one_process(ranks: int) -> None:
    r = mpirun(ranks, "parity.py", *CASES[ranks], "--steps", "20", "--batch", "8", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    out = last_json(r.stdout)
    assert out["world_size"] == ranks
    assert [c["case"] for c in out["results"]] == [_name(c) for c in CASES[ranks]]
    for c in out["results"]:
        assert c["steps"] == 20, c
        assert c["moved"] > 1e-3, c  # the parameters really trained
        flags = c["case"].split("/")[3].split("+") if c["case"].count("/") == 3 else []
        if c["case"].startswith("bn/") and "sync" not in flags:
            # per-rank statistics (the default) are not the global batch's
            assert c["rel"] > 1e-4 and c["buffer_rel"] > 1e-3, c
            continue
        assert c["rel"] <= 1e-5, c
        assert c["loss_rel"] <= 1e-5, c
        if "/sgd/" in c["case"] or "f64" in flags:
            assert c["max_rel"] <= 1e-5, c
        if c["case"].startswith("bn/"):
            assert c["buffers"] == 4 and c["buffer_rel"] <= 1e-5, c  # running mean and var
        if "+overlap" in c["case"]:
            assert c["buckets"] >= 4, c  # several buckets, each started during the backward
