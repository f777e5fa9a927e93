"""Import real transformer exports with dynamic batch and sequence axes, and time a GPT-2
small import.

Needs torch and transformers (optional; onnxscript for the dynamo exporter). Every family in
``tests/onnx_import/hf_exports.py`` (small random-init configs) is exported twice -- the
TorchScript exporter at opset 17 with ``dynamic_axes`` and the dynamo exporter at opset 18 with
``dynamic_shapes`` -- imported, and run on NumPy and (re-exported) on ORT at three sizes against
ORT on the original file. Then a random-init GPT-2 small (124M parameters) is exported with
dynamic axes (legacy exporter) and its import is timed (best of ``--repeat``). Prints
``dynamic_exports``, ``dynamic_imported``, ``dynamic_max_abs_err``, ``gpt2_small_import_s``
(and the failures, if any). Single process; NumPy/ORT use their default thread counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _gpt2_small(path: Path) -> None:
    import torch
    import transformers as tr

    from tests.onnx_import.hf_exports import _Wrap

    torch.manual_seed(0)
    model = tr.GPT2Model(tr.GPT2Config()).eval()
    wrapped = _Wrap.make(model, ("input_ids", "attention_mask"))
    ids = torch.randint(0, 50257, (1, 8))
    axes = {k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask")}
    torch.onnx.export(wrapped, (ids, torch.ones_like(ids)), str(path),
                      input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                      dynamo=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--exporters", default="legacy,dynamo")
    ap.add_argument("--families", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"this benchmark needs torch and transformers: {e}") from None
    from lbdl_graph.frontends.onnx import import_onnx
    from tests.onnx_import.hf_exports import FAMILIES, check_dynamic, export, seq_axis_dynamic

    families = [f for f in args.families.split(",") if f] or list(FAMILIES)
    results: dict[str, Any] = {"dynamic_exports": 0, "dynamic_imported": 0,
                               "dynamic_max_abs_err": 0.0, "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in families:
            for exporter in args.exporters.split(","):
                path = Path(tmp) / f"{fam}_{exporter}.onnx"
                try:
                    feeds = export(fam, exporter, path)
                except Exception as e:  # an exporter limitation, not ours: reported, not counted
                    results["failures"].append(f"{fam}/{exporter}: export failed "
                                               f"({type(e).__name__})")
                    continue
                results["dynamic_exports"] += 1
                try:
                    err = check_dynamic(path, feeds, seq_dynamic=seq_axis_dynamic(fam))
                except Exception as e:
                    results["failures"].append(f"{fam}/{exporter}: {str(e).splitlines()[0]}")
                    continue
                if err < 1e-5:
                    results["dynamic_imported"] += 1
                else:
                    results["failures"].append(f"{fam}/{exporter}: max abs err {err}")
                results["dynamic_max_abs_err"] = max(results["dynamic_max_abs_err"], err)
        path = Path(tmp) / "gpt2_small.onnx"
        _gpt2_small(path)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            graph = import_onnx(path)
            times.append(time.perf_counter() - t0)
        results["gpt2_small_parameters"] = int(sum(p.data.size for p in graph.params))
        results["gpt2_small_import_s"] = round(min(times), 3)
    if args.json:
        print(json.dumps(results))
    else:
        for k, v in results.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
