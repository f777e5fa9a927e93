"""``lbdl-graph check MODEL.onnx --provider cpu|cuda``: nodes a provider has no kernel for.

Each distinct (op × opset × dtypes) of the model is probed as a single-node ONNX Runtime session
on the provider alone, with the answers cached per ORT version (``$LBDL_GRAPH_CACHE_DIR``,
default ``~/.cache/lbdl-graph``; ``--no-cache`` probes afresh). Exit codes: 0 every node has a
kernel, 1 some have none (listed) or the file is bad, 2 usage errors, 3 the provider cannot be
queried on this machine (e.g. CUDA without onnxruntime-gpu or a device: said plainly, no guess).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import CliError

__all__ = ["EXIT_GAPS", "EXIT_UNAVAILABLE", "register"]

EXIT_GAPS = 1
EXIT_UNAVAILABLE = 3


def _run(args: argparse.Namespace) -> int:
    from lbdl_graph.backends.onnx import load_onnx_model
    from lbdl_graph.backends.onnx.coverage import ProviderUnavailable, cache_path, check_coverage

    path = Path(args.model)
    if not path.is_file():
        raise CliError(f"cannot read {path}: no such file")
    if path.suffix != ".onnx":
        raise CliError(f"{path}: expected an .onnx file")
    model = load_onnx_model(path)
    try:
        res = check_coverage(model, args.provider, use_cache=not args.no_cache)
    except ProviderUnavailable as e:
        if args.json:
            print(json.dumps({"provider": args.provider, "available": False, "reason": str(e)}))
        print(f"cannot check {path.name} for {args.provider}: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.json:
        out = {"provider": res.provider, "available": True, "ort_version": res.ort_version,
               "nodes": res.nodes, "probed": res.probed, "cached": res.cached,
               "missing": [asdict(g) for g in res.missing],
               "unprobed": [asdict(g) for g in res.unprobed]}
        print(json.dumps(out, indent=1))
        return EXIT_GAPS if res.missing else 0
    print(f"{path.name}: {res.nodes} nodes checked against {res.provider} (onnxruntime "
          f"{res.ort_version}; {res.probed} probed, {res.cached} from the cache "
          f"{cache_path(args.provider)})")
    for title, gaps in (("no kernel", res.missing), ("not checked", res.unprobed)):
        if not gaps:
            continue
        print(f"{title} ({len(gaps)}):")
        for g in gaps:
            op = f"{g.domain + '.' if g.domain else ''}{g.op}"
            print(f"  {g.node}: {op} opset {g.opset} inputs ({', '.join(g.inputs)}) -> "
                  f"({', '.join(g.outputs)}): {g.reason}")
    if not res.missing:
        print(f"every probed node has a {res.provider} kernel")
    return EXIT_GAPS if res.missing else 0


def register(sub: Any) -> None:
    """Add the ``check`` verb."""
    p = sub.add_parser("check", help="list the nodes an ONNX Runtime provider has no kernel for",
                       description="Pre-flight kernel coverage: probe each (op, opset, dtypes) "
                                   "of MODEL as a single-node session on the provider.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="execution provider to check (default cpu)")
    p.add_argument("--no-cache", action="store_true", help="probe again, ignoring the cache")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run)
