"""Optimum's ORTModelForCausalLM on a random-init GPT-2: greedy decode tokens/s, as JSON.

Run by ``benchmarks/generate.py`` with the Python of an environment where ``optimum-onnx``
is installed (it pins its own transformers and onnxruntime):

    PYTHON benchmarks/_optimum_gpt2.py --threads 1 --prompt 128 --new 128 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    for a, d in (("--threads", 1), ("--prompt", 128), ("--new", 128), ("--repeat", 3),
                 ("--layers", 12), ("--d-model", 768), ("--heads", 12), ("--vocab", 50257),
                 ("--context", 1024)):
        p.add_argument(a, type=int, default=d)
    args = p.parse_args()
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import GPT2Config, GPT2LMHeadModel, StoppingCriteria, StoppingCriteriaList

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = GPT2Config(vocab_size=args.vocab, n_positions=args.context, n_embd=args.d_model,
                     n_layer=args.layers, n_head=args.heads)
    where = tempfile.mkdtemp(prefix="optimum-gpt2-")
    GPT2LMHeadModel(cfg).eval().save_pretrained(where)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    model = ORTModelForCausalLM.from_pretrained(where, export=True, use_cache=True,
                                                provider="CPUExecutionProvider",
                                                session_options=so)
    export_s = time.perf_counter() - t0

    class Clock(StoppingCriteria):
        def __init__(self) -> None:
            self.t: list[float] = []

        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            self.t.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    ids = torch.tensor([np.random.default_rng(0).integers(0, args.vocab, args.prompt).tolist()])

    def run(n: int) -> list[float]:
        clock = Clock()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0,
                       stopping_criteria=StoppingCriteriaList([clock]))
        return clock.t

    run(4)
    rates, prefill = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        t = run(args.new)
        prefill.append(t[0] - t0)
        rates.append((len(t) - 1) / (t[-1] - t[0]))
    from importlib.metadata import version

    print(json.dumps({"tokens_per_s": float(np.median(rates)), "runs": rates,
                      "prefill_s": float(np.median(prefill)), "export_s": export_s,
                      "onnxruntime": ort.__version__, "optimum_onnx": version("optimum-onnx"),
                      "transformers": version("transformers")}))


if __name__ == "__main__":
    main()
