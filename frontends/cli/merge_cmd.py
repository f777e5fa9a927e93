"""``lbdl-graph merge BASE FT1 FT2 ... -o OUT``: merge fine-tuned models in parameter space.

Every model is an ``.onnx`` file (its initializers, imported) or a ``.safetensors`` file (an
lbdl-graph checkpoint, checksum verified, or plain safetensors). ``--method task-arithmetic``
adds the weighted task vectors ``FT_t - BASE`` to the base (``--weights``: one per model or one
for all); ``--method ties`` trims, elects signs and averages them (``--density``, ``--lam``).
``OUT.onnx`` (needs an ``.onnx`` base: its graph carries the merged weights) or
``OUT.safetensors`` (a checkpoint of the merged parameters). The merge runs as a graph
(:mod:`lbdl_graph.passes.merge_graph`); ``--save-graph G.onnx`` writes that graph too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .common import CliError, UsageError, check_output

__all__ = ["load_params", "register"]


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from lbdl_graph.frontends.training.checkpoint import FORMAT, load_checkpoint

    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types on damaged files
        raise CliError(f"cannot read {path}: not a valid safetensors file ({e})") from None
    if meta.get("format") == FORMAT:
        return load_checkpoint(path)[0]
    try:
        return dict(load_file(str(path)))
    except Exception as e:
        raise CliError(f"cannot read {path}: damaged safetensors file ({e})") from None


def load_params(spec: str) -> tuple[dict[str, np.ndarray], Any]:
    """(parameters by name, the imported graph or None) of an .onnx or .safetensors file.

    The weights an inference export stores transposed (``w.T``, see ``fold_params``) are read
    back as the model's parameters (``w``), so exports merge with training checkpoints.
    """
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"cannot read {path}: no such file")
    if path.suffix == ".onnx":
        from lbdl_graph.frontends.onnx import import_onnx
        from lbdl_graph.passes.fold_parameters import unfold_arrays

        graph = import_onnx(path)
        state, _ = unfold_arrays(graph.param_arrays(), graph.metadata.get("folded_params", {}))
        return state, graph
    if path.suffix == ".safetensors":
        return _load_safetensors(path), None
    raise UsageError(f"{spec}: expected an .onnx or .safetensors file")


def _norm(tau: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(t * t)) for t in tau.values())))


def _run(args: argparse.Namespace) -> int:
    from lbdl_graph.backends.numpy import Interpreter
    from lbdl_graph.backends.onnx import save_onnx
    from lbdl_graph.frontends.training import save_checkpoint
    from lbdl_graph.passes.merge import task_vector
    from lbdl_graph.passes.merge_graph import build_merge_graph

    method = args.method.replace("-", "_")
    if method == "ties" and args.weights is not None:
        raise UsageError("--weights applies to task-arithmetic; TIES takes --lam and --density")
    if method == "task_arithmetic" and (args.density is not None or args.per_tensor):
        raise UsageError("--density and --per-tensor apply to --method ties")
    if not args.models or len(args.models) < 2:
        raise UsageError("merge needs a base and at least one fine-tuned model")
    out = Path(args.output)
    if out.suffix not in (".onnx", ".safetensors"):
        raise UsageError(f"-o {out}: the output must be an .onnx or .safetensors file")
    check_output(out)
    if args.save_graph:
        if Path(args.save_graph).suffix != ".onnx":
            raise UsageError(f"--save-graph {args.save_graph}: the merge graph is an .onnx file")
        check_output(args.save_graph)
    base_spec, *ft_specs = args.models
    if out.resolve() in {Path(m).resolve() for m in args.models}:
        raise CliError(f"refusing to overwrite the input {out}; choose another output path")
    if out.suffix == ".onnx" and Path(base_spec).suffix != ".onnx":
        raise UsageError("an .onnx output needs an .onnx base model (its graph)")
    base, base_graph = load_params(base_spec)
    fts = [load_params(s)[0] for s in ft_specs]
    density = 0.2 if args.density is None else args.density
    if method == "ties":
        graph = build_merge_graph(base, fts, "ties", density=density, lam=args.lam,
                                  per_tensor=args.per_tensor)
        how = (f"TIES, density {density:g}, "
               f"lam {args.lam:g}{', per tensor' if args.per_tensor else ''}")
    else:
        weights: float | list[float] = 1.0 if args.weights is None else (
            args.weights[0] if len(args.weights) == 1 else list(args.weights))
        graph = build_merge_graph(base, fts, weights=weights)
        how = f"task arithmetic, weights {weights}"
    merged = Interpreter(graph).run({})
    if args.save_graph:
        save_onnx(graph, args.save_graph, training=False)
        print(f"wrote the merge graph ({len(graph.nodes)} nodes) to {args.save_graph}")
    print(f"merging {len(fts)} fine-tuned model(s) into {base_spec} ({len(base)} parameters): "
          f"{how}")
    for spec, ft in zip(ft_specs, fts, strict=True):
        print(f"  {spec}: task vector norm {_norm(task_vector(base, ft)):.4g}")
    delta = _norm({k: np.asarray(merged[k], np.float64) - np.asarray(v, np.float64)
                   for k, v in base.items() if np.asarray(v).dtype.kind == "f"})
    print(f"  merged - base: norm {delta:.4g}")
    if base_graph is not None and out.suffix == ".onnx":
        from lbdl_graph.passes.fold_parameters import refold_arrays, unfold_arrays

        _, folds = unfold_arrays(base_graph.param_arrays(),
                                 base_graph.metadata.get("folded_params", {}))
        save_onnx(base_graph.with_params(refold_arrays(merged, folds)), out, training=False)
    else:
        save_checkpoint(out, merged, {"merged": method, "base": base_spec, "models": ft_specs})
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


def register(sub: Any) -> None:
    """Add the ``merge`` verb."""
    p = sub.add_parser("merge", help="merge fine-tuned models (task arithmetic, TIES)",
                       description="Merge fine-tuned versions of BASE in parameter space.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="BASE then FT1 FT2 ... (.onnx or .safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="OUT.onnx (with an .onnx base) or OUT.safetensors")
    p.add_argument("--method", choices=("task-arithmetic", "task_arithmetic", "ties"),
                   default="task-arithmetic", help="merge method (default task-arithmetic)")
    p.add_argument("--weights", type=float, nargs="+", metavar="W",
                   help="task-arithmetic scale: one for all or one per fine-tuned model")
    p.add_argument("--density", type=float, default=None,
                   help="TIES: fraction of each task vector kept (default 0.2)")
    p.add_argument("--lam", type=float, default=1.0, help="TIES: scale of the merged vector")
    p.add_argument("--per-tensor", action="store_true", help="TIES: trim per tensor")
    p.add_argument("--save-graph", metavar="GRAPH.onnx",
                   help="also write the merge itself (a graph with the merged parameters as "
                        "outputs) as ONNX, to inspect or run it elsewhere")
    p.set_defaults(func=_run)
