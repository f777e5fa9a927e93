"""``lbdl-graph inspect``, ``optimize`` and ``viz``: look at a model and at what the pass
pipeline does to it.

* ``inspect MODEL``: a layer summary (parameters, MACs, memory) of a zoo model or an ONNX file
  and the report of an optimisation pipeline on it (``--level``, default O2, preceded by
  ``fold_params`` as on every inference path); ``--json``. The memory figures count
  activations only: values computed from parameters alone are reported on their own line.
* ``optimize IN.onnx OUT.onnx``: import an ONNX model, run the pipeline (``--check`` compares
  every pass on NumPy) and export the result; the pass report goes to stdout.
* ``viz MODEL -o OUT.svg``: an SVG of the inference graph (layout ops on parameters folded
  into stored weights by ``fold_params``) collapsed by scope and laid out by Graphviz ``dot``
  (``--depth``, ``--expand SCOPE``, ``--focus SCOPE``), or its DOT text (``--dot``).
  ``--diff LEVEL`` draws the graph before and after that optimisation side by side (removed,
  added, fused and changed boxes coloured, with the rule that made each new node).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lbdl_graph.frontends.inspect.collapse import MAX_BOXES

from . import UsageError
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

def _inspect(args: argparse.Namespace) -> int:
    from lbdl_graph.frontends.inspect import summary

    dims = parse_bind(args.bind)
    graph = load_graph(args.model, config=args.config)
    table = summary(graph, by=args.by, bindings=dims, depth=args.depth)
    opt, report, _ = optimize(graph, args.level, inference=True)
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
    opt, report, rules = optimize(graph, args.level, check=args.check, inference=True)
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
    from lbdl_graph.frontends.inspect import (
        collapse,
        diff_dot,
        diff_svg,
        draw_svg,
        graph_diff,
        parse_svg,
        to_dot,
    )

    out = check_output(args.output)
    if args.depth is not None and args.depth < 1:
        raise UsageError(f"--depth must be at least 1, got {args.depth}")
    if args.max_boxes < 1:
        raise UsageError(f"--max-boxes must be at least 1, got {args.max_boxes}")
    graph = load_graph(args.model, config=args.config)
    kw = {"depth": args.depth, "expand": args.expand or (), "params": args.params,
          "cluster": not args.flat, "max_boxes": args.max_boxes}
    kind = "DOT" if args.dot else "SVG"
    if args.diff is None:
        from lbdl_graph.passes.fold_parameters import fold_params

        graph = fold_params(graph).graph  # draw what runs: no transposed weights
        kw["focus"] = args.focus
        if args.dot:
            text = to_dot(graph, **kw)
            pic = collapse(graph, **{k: v for k, v in kw.items() if k != "cluster"})
        else:
            text, pic = draw_svg(graph, **kw)
        atomic_write(out, text)
        size = ""
        if not args.dot:
            geo = parse_svg(text)
            size = f", {geo.width_px:,.0f} x {geo.height_px:,.0f} px"
        print(f"wrote {out}: {pic.label} ({kind}{size}, {out.stat().st_size:,} bytes)")
        if pic.depth < pic.max_depth and not args.focus:
            print(f"more detail: --depth {pic.depth + 1}, --expand SCOPE or --focus SCOPE "
                  f"(scopes: {', '.join(_first_scopes(pic))})")
        return 0
    if args.focus:
        raise UsageError("--focus cannot be combined with --diff")
    opt, report, rules = optimize(graph, args.diff, inference=True)
    d = graph_diff(graph, opt, rules)
    text = (diff_dot(graph, opt, rule_names=rules, **kw) if args.dot
            else diff_svg(graph, opt, rule_names=rules, **kw))
    atomic_write(out, text)
    c = d.counts
    print(f"{args.diff}: {len(graph.nodes)} -> {len(opt.nodes)} nodes ({c['removed']} removed, "
          f"{c['added']} added, {c['fused']} fused, {c['changed']} changed)")
    fired = [p.name for p in report.passes if p.changed]
    print(f"passes that changed the graph: {', '.join(fired) or 'none'}")
    print(f"wrote {out} ({kind}, {out.stat().st_size:,} bytes)")
    return 0


def _first_scopes(pic: Any, n: int = 4) -> list[str]:
    """A few collapsed scopes of a picture, to suggest for --expand / --focus."""
    keys = [b.tree.key for b in pic.boxes.values() if b.kind == "scope" and b.tree is not None]
    return keys[:n] + (["..."] if len(keys) > n else [])


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

    v = sub.add_parser(
        "viz", help="draw a zoo model or .onnx file collapsed by scope, as SVG (or DOT)",
        description="Draw MODEL (a zoo name or .onnx file) as an SVG picture laid out by "
                    "Graphviz dot (a system dot or the graphviz-pure wheel), or as DOT text. "
                    "Scopes (module paths) deeper than --depth are collapsed into one box "
                    "each; by default the depth is the deepest that keeps the picture at "
                    "about 60 boxes. --diff draws what an optimisation changes.")
    v.add_argument("model", metavar="MODEL", help="zoo model name or .onnx file")
    v.add_argument("-o", "--output", required=True, metavar="OUT.svg", help="the output file")
    v.add_argument("--depth", type=int, default=None, metavar="N",
                   help="open scopes down to N levels; deeper ones are one box each "
                        "(default: the deepest with at most about 60 boxes)")
    v.add_argument("--expand", action="append", metavar="SCOPE",
                   help="also open this scope (repeatable), e.g. layers.0.attn")
    v.add_argument("--focus", metavar="SCOPE",
                   help="draw only this scope, in full when that fits --max-boxes")
    v.add_argument("--max-boxes", type=int, default=MAX_BOXES, metavar="N",
                   help=f"refuse pictures with more boxes (default {MAX_BOXES})")
    v.add_argument("--diff", metavar="LEVEL", default=None,
                   help="draw before/after this level (O1..O3 or pass names)")
    v.add_argument("--dot", action="store_true", help="write Graphviz DOT text instead of SVG")
    v.add_argument("--config", choices=("tiny", "default"), default=None,
                   help="for a zoo family name: its tiny or default configuration")
    v.add_argument("--params", choices=("inline", "boxes", "none"), default="inline",
                   help="parameters listed in their node's box, as boxes, or left out")
    v.add_argument("--flat", action="store_true", help="no frames around open scopes")
    v.set_defaults(func=_viz)
