"""Time to load a GPT-2 small ``save_pretrained`` directory into the zoo GPT (``GPT.from_hf``).

Needs torch and transformers (optional dependencies): a random-init ``GPT2LMHeadModel`` with
GPT-2 small's config (124,439,808 parameters) is written to a temporary directory, then loaded
``--repeat`` times. Reports ``gpt2_small_from_hf_s`` (best), ``gpt2_small_from_hf_median_s``,
``parameters`` and ``logits_max_abs_err`` (ours on NumPy against transformers, one sequence of
``--tokens`` tokens). The loader reads safetensors, transposes GPT-2's Conv1D weights into the
Linear layout and hands the arrays to the model without a further copy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        raise SystemExit(f"this benchmark needs torch and transformers: {e}") from None

    from lbdl_graph.backends.numpy import run
    from lbdl_graph.frontends import InputSpec, trace
    from lbdl_graph.frontends.zoo import GPT

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf.save_pretrained(Path(tmp) / "gpt2")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model = GPT.from_hf(Path(tmp) / "gpt2")
            times.append(time.perf_counter() - t0)
    ids = np.random.default_rng(0).integers(0, 50257, (1, args.tokens))
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    g = trace(model, {"idx": InputSpec(("N", "T"), "int64")}, training=False)
    err = float(np.abs(run(g, {"idx": ids})["output"] - ref).max())
    res = {"gpt2_small_from_hf_s": round(min(times), 3),
           "gpt2_small_from_hf_median_s": round(statistics.median(times), 3),
           "parameters": model.num_parameters(), "logits_max_abs_err": err}
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
