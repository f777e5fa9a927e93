"""Per-node overhead of the NumPy interpreter on a chain of tiny ops.

Runs a chain of 10,000 tiny elementwise ops (alternating add and mul on a 4-element vector)
through the interpreter and the same NumPy calls in a plain Python loop, in the same process,
and prints the overhead per node in microseconds and the ratio interpreter / plain loop.
Goal: at most 3 us of overhead per node.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lbdl_graph import GraphBuilder, ops
from lbdl_graph.backends.numpy import Interpreter


def build_chain(n: int):  # type: ignore[no-untyped-def]
    """A graph x -> (x + a) * b -> ... with ``n`` nodes."""
    with GraphBuilder("chain") as b:
        x = b.input("x", "f32", (4,))
        a = b.param("a", np.full(4, 1e-3, np.float32))
        m = b.param("m", np.full(4, 0.999, np.float32))
        y = x
        for i in range(n):
            y = ops.add(y, a) if i % 2 == 0 else ops.mul(y, m)
        return b.build([y])


def plain_loop(x: np.ndarray, a: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    """The same computation as direct NumPy calls."""
    y = x
    for i in range(n):
        y = np.add(y, a) if i % 2 == 0 else np.multiply(y, m)
    return y


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Best wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    graph = build_chain(args.nodes)
    interp = Interpreter(graph)
    x = np.ones(4, np.float32)
    a, m = graph.param_map["a"].data, graph.param_map["m"].data
    got = interp.run({"x": x})[graph.outputs[0].name]
    np.testing.assert_allclose(got, plain_loop(x, a, m, args.nodes), rtol=1e-6)
    t_interp = best_of(lambda: interp.run({"x": x}), args.repeat)
    t_plain = best_of(lambda: plain_loop(x, a, m, args.nodes), args.repeat)
    result = {
        "nodes": args.nodes,
        "interpreter_s": t_interp,
        "plain_numpy_s": t_plain,
        "numpy_call_us": t_plain / args.nodes * 1e6,
        "overhead_us_per_node": (t_interp - t_plain) / args.nodes * 1e6,
        "ratio": t_interp / t_plain,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.nodes} nodes: interpreter {t_interp * 1e3:.2f} ms, plain NumPy "
              f"{t_plain * 1e3:.2f} ms ({result['numpy_call_us']:.2f} us/call)")
        print(f"overhead {result['overhead_us_per_node']:.2f} us/node, ratio {result['ratio']:.2f}x"
              " (goal: <= 3 us/node)")


if __name__ == "__main__":
    main()
