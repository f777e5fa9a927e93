"""``lbdl-graph inspect``, ``optimize`` and ``viz``: look at a model and at what the pass
pipeline does to it.

* ``inspect MODEL``: a layer summary (parameters, MACs, memory) of a zoo model or an ONNX file
  and the report of an optimisation pipeline on it (``--level``, default O2); ``--json``.
* ``optimize IN.onnx OUT.onnx``: import an ONNX model, run the pipeline (``--check`` compares
  every pass on NumPy) and export the result; the pass report goes to stdout.
* ``viz MODEL -o OUT.svg``: an SVG from the builtin layered layout (nodes clustered by module)
  or Graphviz DOT text (``--dot``). ``--diff LEVEL`` draws the graph before and after that
  optimisation side by side (removed, added, fused and changed nodes coloured, with the pass
  that made each new node); with ``--dot`` the optimised graph with those nodes highlighted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import (
    CliError,
    atomic_write,
    check_output,
    level_arg,
    load_graph,
    optimize,
    parse_bind,
)
from .explore_cmd import explore_command

__all__ = ["register"]

_DOT_COLORS = {"added": "#c6f6d5", "fused": "#e9d8fd", "changed": "#fefcbf"}


def _inspect(args: argparse.Namespace) -> int:
    from lbdl_graph.frontends.inspect import summary

    dims = parse_bind(args.bind)
    graph = load_graph(args.model, config=args.config)
    table = summary(graph, by=args.by, bindings=dims, depth=args.depth)
    opt, report, _ = optimize(graph, args.level)
    explore = explore_command(args.model, args.level, compare="O0")
    if args.json:
        print(json.dumps({"summary": table.to_dict(), "level": args.level,
                          "nodes_before": len(graph.nodes), "nodes_after": len(opt.nodes),
                          "passes": report.to_dict(), "explore_command": explore}, indent=1))
        return 0
    print(table)
    print()
    print(f"{args.level}: {len(graph.nodes)} -> {len(opt.nodes)} nodes")
    print(report)
    print(f"\ninteractive view of every stage: {explore}")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from lbdl_graph.backends.onnx import save_onnx
    from lbdl_graph.frontends.inspect import diff_text
    from lbdl_graph.frontends.onnx import import_onnx

    src = Path(args.input)
    if not src.is_file():
        raise CliError(f"cannot read ONNX model {src}: no such file")
    out = check_output(args.output)
    if out.resolve() == src.resolve():
        raise CliError(f"refusing to overwrite the input {src}; choose another output path")
    graph = import_onnx(src)
    opt, report, rules = optimize(graph, args.level, check=args.check)
    save_onnx(opt, out, opset=args.opset, training=False)
    if args.json:
        print(json.dumps({"level": args.level, "nodes_before": len(graph.nodes),
                          "nodes_after": len(opt.nodes), "passes": report.to_dict(),
                          "output": str(out)}, indent=1))
        return 0
    print(report)
    if args.diff:
        print(diff_text(graph, opt, rule_names=rules, context=1))
    checked = " (translation checked on NumPy)" if args.check else ""
    print(f"{args.level}: {len(graph.nodes)} -> {len(opt.nodes)} nodes{checked}")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


def _viz(args: argparse.Namespace) -> int:
    from lbdl_graph.frontends.inspect import diff_svg, graph_diff, to_dot, to_svg

    out = check_output(args.output)
    graph = load_graph(args.model, config=args.config)
    cluster = not args.flat
    if args.diff is None:
        text = (to_dot(graph, cluster=cluster, params=args.params == "boxes") if args.dot
                else to_svg(graph, cluster=cluster, params=args.params))
        atomic_write(out, text)
        print(f"wrote {out}: {graph.name}, {len(graph.nodes)} nodes "
              f"({'DOT' if args.dot else 'SVG'}, {out.stat().st_size:,} bytes)")
        return 0
    opt, report, rules = optimize(graph, args.diff)
    d = graph_diff(graph, opt, rules)
    if args.dot:
        marks = {n.name: _DOT_COLORS[d.status(n.name)] for n in opt.nodes
                 if d.status(n.name) in _DOT_COLORS}
        text = to_dot(opt, cluster=cluster, params=args.params == "boxes", highlight=marks)
    else:
        text = diff_svg(graph, opt, rule_names=rules, cluster=cluster, params=args.params)
    atomic_write(out, text)
    c = d.counts
    print(f"{args.diff}: {len(graph.nodes)} -> {len(opt.nodes)} nodes ({c['removed']} removed, "
          f"{c['added']} added, {c['fused']} fused, {c['changed']} changed)")
    fired = [p.name for p in report.passes if p.changed]
    print(f"passes that changed the graph: {', '.join(fired) or 'none'}")
    print(f"wrote {out} ({'DOT' if args.dot else 'SVG'}, {out.stat().st_size:,} bytes)")
    return 0


def register(sub: Any) -> None:
    """Add the ``inspect``, ``optimize`` and ``viz`` verbs."""
    p = sub.add_parser("inspect", help="summary and pass report of a zoo model or .onnx file",
                       description="Print a layer summary (params, MACs, memory) and what the "
                                   "optimisation pipeline does to MODEL (a zoo name or .onnx).")
    p.add_argument("model", metavar="MODEL", help="zoo model name or .onnx file")
    p.add_argument("--config", choices=("tiny", "default"), default=None,
                   help="for a zoo family name: its tiny or default configuration")
    level_arg(p, "O2")
    p.add_argument("--by", choices=("layer", "node"), default="layer", help="summary rows")
    p.add_argument("--depth", type=int, default=None, help="group layers to this module depth")
    p.add_argument("--bind", action="append", metavar="N=4",
                   help="size of a symbolic dim for MACs and memory (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_inspect)

    q = sub.add_parser("optimize", help="optimise an ONNX model with the pass pipeline",
                       description="Import IN.onnx, run the pass pipeline and export OUT.onnx.")
    q.add_argument("input", metavar="IN.onnx")
    q.add_argument("output", metavar="OUT.onnx")
    level_arg(q, "O2")
    q.add_argument("--opset", type=int, default=21, help="ONNX opset of the output (default 21)")
    q.add_argument("--check", action="store_true",
                   help="run the graph on NumPy before and after every pass and compare")
    q.add_argument("--diff", action="store_true", help="also print what changed, node by node")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(func=_optimize)

    v = sub.add_parser("viz", help="draw a zoo model or .onnx file as SVG (or DOT)",
                       description="Draw MODEL (a zoo name or .onnx file) as an SVG picture or "
                                   "Graphviz DOT; --diff draws what an optimisation changes.")
    v.add_argument("model", metavar="MODEL", help="zoo model name or .onnx file")
    v.add_argument("-o", "--output", required=True, metavar="OUT.svg", help="the output file")
    v.add_argument("--diff", metavar="LEVEL", default=None,
                   help="draw before/after this level (O1..O3 or pass names)")
    v.add_argument("--dot", action="store_true", help="write Graphviz DOT text instead of SVG")
    v.add_argument("--config", choices=("tiny", "default"), default=None,
                   help="for a zoo family name: its tiny or default configuration")
    v.add_argument("--params", choices=("inline", "boxes", "none"), default="inline",
                   help="parameters listed in their node's box, as boxes, or left out")
    v.add_argument("--flat", action="store_true", help="no module clusters")
    v.set_defaults(func=_viz)
