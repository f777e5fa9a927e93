"""Time to build and trace the zoo's book-size models: ResNet-50 and GPT-2 small (issue 16).

"Build" constructs the model with its initial weights (25.6M and 124.4M float32 parameters);
"trace" records the forward pass on symbolic inputs (batch ``N``, and sequence length ``T`` for
GPT-2) into a verified graph, which copies every parameter into the graph.

``resnet50_s`` and ``gpt2_small_s`` are build + trace in a fresh interpreter (what a user
waits for; the memory is touched for the first time, and on a VM page faults cost as much as
the arithmetic). ``*_user_s`` and ``*_sys_s`` are the CPU time of that cold run, all threads
together: on the shared machine they move less with the load than the wall time (system time
is mostly the kernel faulting in and zeroing the fresh pages). The baseline
``*_numpy_draw_s``, measured in the same run, is plain NumPy allocating and drawing the same
float32 arrays on one thread (``standard_normal`` into ``np.zeros``); ``*_vs_numpy_draw`` is
build + trace over it. ``*_warm_s`` are the best of ``--repeat`` runs in one process, where
the allocator hands back memory freed by the previous run.

``gpt2_depth_*`` repeat the cold GPT-2 run at 2, 4, 8, 12 and 24 layers (width, vocabulary and
context of GPT-2 small), with least-squares lines ``a + b * layers`` through the wall, trace and
CPU times and their worst relative residuals: the time should stay linear in depth. Goal
(issue 16): GPT-2 small built and traced in under 1 s. ``--profile`` prints a cProfile summary
of one cold GPT-2 build + trace. ``threads`` is the number of threads the weight draws use.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import multiprocessing
import pstats
import resource
import time

import numpy as np

from lbdl_graph.frontends import init, manual_seed
from lbdl_graph.frontends.zoo import ZOO

MODELS = {"resnet50": "resnet50_s", "gpt2_small": "gpt2_small_s"}
DEPTHS = (2, 4, 8, 12, 24)


Run = tuple[float, float, float, float, int, int]


def _cpu() -> tuple[float, float]:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime, use.ru_stime


def build_and_trace(name: str, layers: int | None = None) -> Run:
    """Seconds to build and to trace entry ``name`` (with ``layers`` layers if given), the user
    and system CPU seconds of both (all threads), the parameter and node counts."""
    entry = ZOO[name]
    if layers is not None:
        entry = dataclasses.replace(entry, config=dataclasses.replace(entry.config,
                                                                      num_layers=layers))
    manual_seed(0)
    (u0, s0), t0 = _cpu(), time.perf_counter()
    model = entry.model()
    t1 = time.perf_counter()
    graph = entry.trace(model)
    t2, (u2, s2) = time.perf_counter(), _cpu()
    n_params, n_nodes = model.num_parameters(), len(graph.nodes)
    del model, graph
    gc.collect()
    return t1 - t0, t2 - t1, u2 - u0, s2 - s0, n_params, n_nodes


def numpy_draw(name: str) -> tuple[float, float, float]:
    """The baseline: seconds (wall, user, system) for plain NumPy, one thread, to allocate and
    draw every parameter of ``name`` as float32 N(0, 0.02²) (``Generator.standard_normal``)."""
    with init.skip_random():
        shapes = [p.shape for p in ZOO[name].model().parameters()]
    gc.collect()
    gen = np.random.default_rng(0)
    (u0, s0), t0 = _cpu(), time.perf_counter()
    arrays = []
    for shape in shapes:
        arr = np.zeros(shape, np.float32)
        gen.standard_normal(dtype=np.float32, out=arr)
        arr *= np.float32(0.02)
        arrays.append(arr)
    t1, (u1, s1) = time.perf_counter(), _cpu()
    return t1 - t0, u1 - u0, s1 - s0


def profile(name: str, top: int) -> str:
    """A cProfile report (by internal time) of one build + trace of ``name``."""
    prof = cProfile.Profile()
    prof.enable()
    build_and_trace(name)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def cold(name: str, layers: int | None = None) -> Run:
    """:func:`build_and_trace` in a fresh interpreter (spawned, so nothing is preallocated)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(build_and_trace, (name, layers))


def cold_numpy_draw(name: str) -> tuple[float, float, float]:
    """:func:`numpy_draw` in a fresh interpreter."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(numpy_draw, (name,))


def linear_fit(xs: list[int], ys: list[float]) -> dict[str, float]:
    """Least-squares ``y = a + b x``: intercept, slope and the worst relative residual."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    a = my - b * mx
    worst = max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys, strict=True))
    return {"intercept_s": round(a, 4), "per_layer_s": round(b, 4),
            "max_rel_residual": round(worst, 3)}


def depth_sweep() -> dict[str, object]:
    """Cold GPT-2 build + trace at each depth of :data:`DEPTHS`, and the linear fit."""
    runs = {d: cold("gpt2_small", d) for d in DEPTHS}
    wall = [runs[d][0] + runs[d][1] for d in DEPTHS]
    return {
        "gpt2_depth_s": {str(d): round(w, 3) for d, w in zip(DEPTHS, wall, strict=True)},
        "gpt2_depth_trace_s": {str(d): round(runs[d][1], 4) for d in DEPTHS},
        "gpt2_depth_cpu_s": {str(d): round(runs[d][2] + runs[d][3], 3) for d in DEPTHS},
        "gpt2_depth_params": {str(d): runs[d][4] for d in DEPTHS},
        "gpt2_depth_fit": linear_fit(list(DEPTHS), wall),
        "gpt2_depth_cpu_fit": linear_fit(list(DEPTHS), [runs[d][2] + runs[d][3] for d in DEPTHS]),
        "gpt2_depth_trace_fit": linear_fit(list(DEPTHS), [runs[d][1] for d in DEPTHS]),
    }


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-depth", action="store_true", help="skip the GPT-2 depth sweep")
    args = parser.parse_args()
    results: dict[str, object] = {"threads": init._workers()}
    for name, key in MODELS.items():
        build, trace, user, system, n_params, n_nodes = cold(name)
        results[key] = round(build + trace, 3)
        results[f"{name}_build_s"] = round(build, 3)
        results[f"{name}_trace_s"] = round(trace, 3)
        results[f"{name}_user_s"] = round(user, 3)
        results[f"{name}_sys_s"] = round(system, 3)
        base, base_user, base_sys = cold_numpy_draw(name)
        results[f"{name}_numpy_draw_s"] = round(base, 3)
        results[f"{name}_numpy_draw_user_s"] = round(base_user, 3)
        results[f"{name}_numpy_draw_sys_s"] = round(base_sys, 3)
        results[f"{name}_vs_numpy_draw"] = round((build + trace) / base, 3)
        warm = [build_and_trace(name) for _ in range(max(1, args.repeat))]
        results[f"{name}_warm_s"] = round(min(b + t for b, t, *_ in warm), 3)
        results[f"{name}_params"] = n_params
        results[f"{name}_nodes"] = n_nodes
    if not args.no_depth:
        results.update(depth_sweep())
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, key in MODELS.items():
            print(f"{name:11s} build {results[f'{name}_build_s']:.3f} s + trace "
                  f"{results[f'{name}_trace_s']:.3f} s = {results[key]:.3f} s cold, "
                  f"{results[f'{name}_warm_s']:.3f} s warm, CPU {results[f'{name}_user_s']:.3f}"
                  f" s user + {results[f'{name}_sys_s']:.3f} s system; NumPy alone draws the "
                  f"weights in {results[f'{name}_numpy_draw_s']:.3f} s, ratio "
                  f"{results[f'{name}_vs_numpy_draw']:.2f} ({results[f'{name}_params']:,} "
                  "parameters, "
                  f"{results[f'{name}_nodes']} nodes; goal < 1 s)")
        if not args.no_depth:
            print(f"gpt2 by depth (s): {results['gpt2_depth_s']}, trace alone "
                  f"{results['gpt2_depth_trace_s']}; fit {results['gpt2_depth_fit']}")
    if args.profile:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            print(pool.apply(profile, ("gpt2_small", 15)))


if __name__ == "__main__":
    main()
