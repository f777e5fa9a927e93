"""Time of ``explore --out``: a compiled training step converted to Model Explorer JSON files.

Two training steps (forward, cross-entropy loss, backward, Adam) are compiled first, which is
timed separately (``*_build_s``: model initialisation, tracing, autodiff, optimizer):

* GPT-2 small (``gpt2_small``, 124M parameters);
* a deep, narrow GPT (the zoo's ``gpt_tiny`` configuration with ``--layers`` blocks, 168 by
  default: about 100,000 nodes).

Then ``explore(step, stages=[the step], out=DIR)`` runs: the graph JSON with scope namespaces
and per-scope totals, the overlays (parameters, MACs, output bytes, activations kept for
backward) and the files written. ``*_explore_s`` is the best wall time of ``--repeat`` runs and
``*_explore_cpu_s`` its process CPU time (on a loaded machine wall time exceeds CPU time).
Goals: GPT-2 small under 3 s, the 100,000-node step under 10 s. ``big_top_level_items`` counts
what the page shows when it opens (top-level nodes plus top-level layers, all collapsed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.cli.explore_cmd import zoo_train_step
from lbdl_graph.frontends.inspect.explorer import explore
from lbdl_graph.frontends.inspect.explorer_stages import Stage
from lbdl_graph.frontends.zoo import ZOO


def compile_step(entry: Any) -> tuple[Any, float]:
    """The training step of a zoo entry and the seconds it took to build."""
    manual_seed(0)
    t0 = time.perf_counter()
    step = zoo_train_step(entry)
    return step, time.perf_counter() - t0


def time_explore(step: Any, name: str, repeat: int) -> dict[str, Any]:
    """Best wall and CPU seconds of ``explore --out`` on the step, with sizes and top level."""
    stage = Stage("00 train step", "train", step.graph, state=step.initial_state,
                  trainable=tuple(step.info.params), note="training step")
    best = (float("inf"), 0.0)
    files: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(max(1, repeat)):
            out = Path(tmp) / str(i)
            t0, c0 = time.perf_counter(), time.process_time()
            res = explore(step.graph, stages=[stage], out=out, name=name)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert isinstance(res, list)
            files = res
            if wall < best[0]:
                best = (wall, cpu)
        graph = json.loads(files[0].read_text())["graphs"][0]
        top = {n["namespace"].split("/")[0] or n["id"] for n in graph["nodes"]}
        sizes = sum(p.stat().st_size for p in files)
    return {"explore_s": round(best[0], 3), "explore_cpu_s": round(best[1], 3),
            "nodes": len(step.graph.nodes), "json_bytes": sizes, "top_level_items": len(top),
            "files": len(files)}


def main() -> None:
    """Measure and print the figures (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--layers", type=int, default=168,
                        help="blocks of the deep GPT (168: about 100,000 nodes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    tiny = ZOO["gpt_tiny"]
    deep = replace(tiny, name=f"gpt_tiny_{args.layers}_layers",
                   config=replace(tiny.config, num_layers=args.layers))
    for key, entry in (("gpt2_small_train", ZOO["gpt2_small"]), ("big_train", deep)):
        step, build = compile_step(entry)
        figures = time_explore(step, entry.name, args.repeat)
        results[f"{key}_build_s"] = round(build, 3)
        results.update({f"{key}_{k}": v for k, v in figures.items()})
        del step
    results["big_train_layers"] = args.layers
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for k, v in results.items():
        print(f"{k:<36} {v}")


if __name__ == "__main__":
    main()
