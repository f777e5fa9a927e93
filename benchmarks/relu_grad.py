"""ReLU backward on ONNX Runtime CPU: ``Where(y > 0, g, 0)`` against ``g * Cast(y > 0)``.

``python benchmarks/relu_grad.py [--repeat R] [--json]`` times both two-node ONNX graphs at one
intra-op thread (non-spinning) over the activation shapes of the zoo's MLP, LeNet and
ResNet-tiny train steps, in interleaved rounds (thread CPU time, min and median over rounds),
and checks the two give the same array. ``passes/autodiff/rules_elementwise.py`` uses the
second form for the ReLU VJP.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = ((64, 256), (64, 1024), (64, 6, 24, 24), (32, 16, 32, 32))


def session(mul_cast: bool) -> ort.InferenceSession:
    """The ReLU backward of output ``y`` and cotangent ``g`` in one of the two forms."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Greater", ["y", "zero"], ["c"])]
    if mul_cast:
        nodes += [helper.make_node("Cast", ["c"], ["cf"], to=f),
                  helper.make_node("Mul", ["g", "cf"], ["o"])]
    else:
        nodes.append(helper.make_node("Where", ["c", "g", "zero"], ["o"]))
    g = helper.make_graph(nodes, "relu_grad",
                          [helper.make_tensor_value_info(n, f, None) for n in ("y", "g")],
                          [helper.make_tensor_value_info("o", f, None)],
                          initializer=[numpy_helper.from_array(np.array(0, np.float32), "zero")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def measure(repeat: int) -> dict[str, Any]:
    """Per shape: min and median ms of each form and the speed-up of Mul + Cast."""
    forms = {"where": session(False), "mul_cast": session(True)}
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        feed = {"y": np.maximum(rng.standard_normal(shape), 0).astype(np.float32),
                "g": rng.standard_normal(shape).astype(np.float32)}
        a, b = (s.run(None, feed)[0] for s in forms.values())
        if not np.array_equal(a, b):
            raise AssertionError(f"the two forms differ at {shape}")
        calls = max(10, int(2e6 / np.prod(shape)))
        times: dict[str, list[float]] = {k: [] for k in forms}
        for _ in range(repeat):
            for k, s in forms.items():
                t0 = time.thread_time()
                for _ in range(calls):
                    s.run(None, feed)
                times[k].append((time.thread_time() - t0) / calls * 1e3)
        key = "x".join(map(str, shape))
        for k, v in times.items():
            out[f"{key}_{k}_ms_min"] = min(v)
            out[f"{key}_{k}_ms_median"] = float(np.median(v))
        out[f"{key}_speedup"] = float(np.median(times["where"]) / np.median(times["mul_cast"]))
    return out


def main() -> None:
    """Measure and print (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = measure(args.repeat)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    for shape in SHAPES:
        key = "x".join(map(str, shape))
        print(f"{key:>14}: where {res[f'{key}_where_ms_median']:.4f} ms, mul+cast "
              f"{res[f'{key}_mul_cast_ms_median']:.4f} ms (median), {res[f'{key}_speedup']:.2f}x")


if __name__ == "__main__":
    main()
