"""Time to build and trace the zoo's book-size models: ResNet-50 and GPT-2 small.

"Build" constructs the model with its initial weights (25.6M and 124.4M float32 parameters);
"trace" records the forward pass on symbolic inputs (batch ``N``, and sequence length ``T`` for
GPT-2) into a verified graph, which copies every parameter into the graph.

``resnet50_s`` and ``gpt2_small_s`` are build + trace in a fresh interpreter (what a user
waits for; the memory is touched for the first time, and on a VM page faults cost as much as
the arithmetic). ``*_warm_s`` are the best of ``--repeat`` runs in one process, where the
allocator hands back memory freed by the previous run. Goal: build + trace under 2 s for each
model. ``--profile`` prints a cProfile summary of one cold GPT-2 build + trace.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import multiprocessing
import pstats
import time

from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.zoo import ZOO

MODELS = {"resnet50": "resnet50_s", "gpt2_small": "gpt2_small_s"}


def build_and_trace(name: str) -> tuple[float, float, int, int]:
    """Seconds to build and to trace entry ``name``, its parameter and node counts."""
    entry = ZOO[name]
    manual_seed(0)
    t0 = time.perf_counter()
    model = entry.model()
    t1 = time.perf_counter()
    graph = entry.trace(model)
    t2 = time.perf_counter()
    n_params, n_nodes = model.num_parameters(), len(graph.nodes)
    del model, graph
    gc.collect()
    return t1 - t0, t2 - t1, n_params, n_nodes


def profile(name: str, top: int) -> str:
    """A cProfile report (by internal time) of one build + trace of ``name``."""
    prof = cProfile.Profile()
    prof.enable()
    build_and_trace(name)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def cold(name: str) -> tuple[float, float, int, int]:
    """:func:`build_and_trace` in a fresh interpreter (spawned, so nothing is preallocated)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(build_and_trace, (name,))


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    results: dict[str, float | int] = {}
    for name, key in MODELS.items():
        build, trace, n_params, n_nodes = cold(name)
        results[key] = round(build + trace, 3)
        results[f"{name}_build_s"] = round(build, 3)
        results[f"{name}_trace_s"] = round(trace, 3)
        warm = [build_and_trace(name) for _ in range(max(1, args.repeat))]
        results[f"{name}_warm_s"] = round(min(b + t for b, t, _, _ in warm), 3)
        results[f"{name}_params"] = n_params
        results[f"{name}_nodes"] = n_nodes
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, key in MODELS.items():
            print(f"{name:11s} build {results[f'{name}_build_s']:.3f} s + trace "
                  f"{results[f'{name}_trace_s']:.3f} s = {results[key]:.3f} s cold, "
                  f"{results[f'{name}_warm_s']:.3f} s warm ({results[f'{name}_params']:,} "
                  f"parameters, {results[f'{name}_nodes']} nodes; goal < 2 s)")
    if args.profile:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            print(pool.apply(profile, ("gpt2_small", 15)))


if __name__ == "__main__":
    main()
