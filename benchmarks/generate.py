"""Generation benchmark: KV-cache decoding on ONNX Runtime CPU against Hugging Face, Optimum and
our own recompute path, all in one run with the same thread count.

Model: the zoo's GPT-2 small (124,439,808 parameters, random init, seed 0) at batch 1 with a
128-token prompt and 128 new tokens (greedy, no stop id, so every run makes all 128). Ours runs
from a generation bundle (``export_generation``: prefill.onnx + decode.onnx, IOBinding keeps
the cache in ORT's memory) for each variant: fp32, and the weight-only ``q8_0`` / ``q4_0``
matmuls (``--variants``; ``float16`` runs too, but ORT's x86 CPU has no fast fp16 MatMul). A
``+shared`` variant is the opt-in shared, in-place KV cache (``shared_cache=True``: ONNX Runtime's
GroupQueryAttention writes each new position into buffers bound once, instead of a Concat of the
past per step); the default runs each precision both ways. The headline ``kv_*`` figures are the
``--headline`` variant's (default ``float32+shared`` when it runs, else the first), named in
``kv_variant`` / ``kv_cache``; ``shared_vs_concat`` compares the two caches per precision.
Baselines, same ``--threads``:

* ``hf``: transformers' ``GPT2LMHeadModel`` (random init, same config) ``generate(use_cache=True,
  do_sample=False)`` on torch CPU; per-token times from a stopping criterion's clock.
* ``optimum``: ``ORTModelForCausalLM.generate`` when ``optimum-onnx`` is importable (it pins
  its own transformers/onnxruntime, so it usually lives in a virtual environment of its own:
  ``--optimum-python ENV/bin/python`` runs ``_optimum_gpt2.py`` there, after our rounds, on a
  GPT-2 of the same config; null with the reason when there is none).
* ``recompute``: our plain graph (no cache) on ORT, the whole sequence each step, timed at
  ``--recompute-samples`` lengths spread over the 128 decode positions (the mean of those
  step times stands for the mean over all positions; running all 128 would take minutes).

Decode tokens/s counts the steps after the first token (prefill + first token are
``prefill_s``). The variants and HF run interleaved for ``--repeat`` rounds and each figure is the
median, so load from other processes hits all alike. ``late_over_early`` is the mean time of the
last 32 decode steps over the first 32. ``bandwidth_share`` is tokens/s x bytes of the matmul
weights the decode graph reads per token / the bandwidth of a large NumPy copy (bytes read +
bytes written per second, best of 5 copies of 512 MiB) measured in the same run.

Measured (``--json --threads 1 --optimum-python ENV/bin/python``, optimum-onnx 0.1.0 with ORT
1.31.1 and transformers 4.57.6 in its own venv; two runs, load average 2.2-4.4 on 2 shared cores,
115-119 s user CPU each): float32+shared 37.7-39.8 tokens/s (float32 concat 29.4-35.6, so the
shared cache is 1.12-1.28x), 1.72-1.78x HF (21.9-22.4), 1.28-1.99x Optimum (29.4 / 20.0, run after
ours), 19.6-21.1x recompute, late/early 1.03-1.04, bandwidth share 0.69-0.73; q8_0+shared
94.4-108.5, q4_0+shared 143.7-144.7 tokens/s (bandwidth share 0.37-0.46, under the fp32 share).

    python benchmarks/generate.py --json          # about 4 minutes on 2 loaded cores
    python benchmarks/generate.py --quick         # gpt_mini, 16 + 16 tokens: a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.generation import generate, trace_generation, trace_recompute
from lbdl_graph.frontends.generation.bundle import export_generation, load_generation
from lbdl_graph.frontends.zoo import ZOO

MATMULS = ("MatMul", "Gemm", "MatMulNBits", "FusedMatMul", "MatMulInteger")
THROUGH = ("Transpose", "DequantizeLinear", "Cast", "Reshape")


def copy_bandwidth(nbytes: int = 2**29) -> float:
    """Bytes read + written per second by ``np.copyto`` of ``nbytes`` (best of 5)."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def matmul_weight_bytes(path: Path) -> int:
    """Bytes of the initializers the model's matmuls read (directly or through a transpose,
    dequantise or cast): what one decode step streams from memory."""
    m = onnx.load(str(path), load_external_data=False)
    size = {}
    for t in m.graph.initializer:
        ext = {e.key: e.value for e in t.external_data}
        size[t.name] = int(ext["length"]) if "length" in ext else len(t.raw_data)
    producer = {o: n for n in m.graph.node for o in n.output}
    found: set[str] = set()

    def visit(name: str, depth: int = 0) -> None:
        if name in size:
            found.add(name)
        elif depth < 3 and name in producer and producer[name].op_type in THROUGH:
            for i in producer[name].input:
                visit(i, depth + 1)

    for n in m.graph.node:
        if n.op_type in MATMULS:
            for i in n.input[1:]:
                visit(i)
    return sum(size[n] for n in found)


def hf_model(config: Any) -> Any:
    """transformers' GPT-2 with the zoo config's sizes, random init, eval mode."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    c = GPT2Config(vocab_size=config.vocab_size, n_positions=config.context,
                   n_embd=config.d_model, n_layer=config.num_layers, n_head=config.num_heads)
    return GPT2LMHeadModel(c).eval()


def hf_run(model: Any, prompt: list[int], new: int) -> dict[str, Any]:
    """One greedy HF generate; per-token clock times from a stopping criterion."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Clock(StoppingCriteria):
        def __init__(self) -> None:
            self.t: list[float] = []

        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            self.t.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    clock = Clock()
    ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0,
                       stopping_criteria=StoppingCriteriaList([clock]))
    steps = np.diff(clock.t)
    return {"prefill_s": clock.t[0] - t0, "steps": steps}


def optimum_python(given: str | None) -> str | None:
    """The Python that has optimum-onnx: ``--optimum-python``, $LBDL_OPTIMUM_PYTHON, or this
    one if it can import ``optimum.onnxruntime``."""
    if given or os.environ.get("LBDL_OPTIMUM_PYTHON"):
        return given or os.environ["LBDL_OPTIMUM_PYTHON"]
    try:
        import optimum.onnxruntime  # noqa: F401
    except Exception:
        return None
    return sys.executable


def optimum_run(python: str | None, config: Any, n_prompt: int, n_new: int, threads: int,
                repeat: int) -> tuple[dict[str, Any] | None, str | None]:
    """Optimum's ORTModelForCausalLM figures (run in ``python``), or None and why not."""
    if python is None:
        return None, ("optimum-onnx is not installed here; install it in a virtual environment "
                      "of its own and pass --optimum-python ENV/bin/python")
    script = Path(__file__).with_name("_optimum_gpt2.py")
    cmd = [python, str(script), "--threads", str(threads), "--prompt", str(n_prompt), "--new",
           str(n_new), "--repeat", str(repeat), "--layers", str(config.num_layers),
           "--d-model", str(config.d_model), "--heads", str(config.num_heads),
           "--vocab", str(config.vocab_size), "--context", str(config.context)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"running {python} failed: {e}"
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"optimum run failed (exit {r.returncode}): {tail}"
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def ours_run(bundle: Any, prompt: list[int], new: int) -> dict[str, Any]:
    out = generate(bundle.runner, prompt, new)
    assert len(out.tokens[0]) == new, out.message
    return {"prefill_s": out.prefill_s, "steps": np.array(out.step_s),
            "cache_peak_bytes": out.cache_peak_bytes, "tokens": out.tokens[0]}


def _tps(steps: np.ndarray) -> float:
    return float(len(steps) / steps.sum())


def recompute_rate(model: Any, ids: list[int], prompt_len: int, threads: int, samples: int,
                   work: Path) -> float:
    """Tokens/s of full recompute, from step times at ``samples`` sequence lengths."""
    from lbdl_graph.backends.onnx import OrtRunner, save_onnx

    path = save_onnx(trace_recompute(model), work / "recompute.onnx", external_data=True)
    r = OrtRunner(path, providers="cpu", intra_op_threads=threads)
    lengths = np.linspace(prompt_len + 1, len(ids), samples).round().astype(int)
    r.run({"input_ids": np.array([ids[:lengths[0]]])})  # warm-up
    times = [_timed(lambda n=n: r.run({"input_ids": np.array([ids[:n]])})) for n in lengths]
    return float(1.0 / np.mean(times))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lbdl-generate-"))
    try:
        bench(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path) -> None:
    """Run the benchmark with its files in ``work``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="gpt_mini, 16 + 16 tokens")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--variants",
                   default="float32,float32+shared,q8_0,q8_0+shared,q4_0,q4_0+shared",
                   help="precisions (float32, float16, q8_0, q4_0, ...), each optionally "
                        "+shared: the shared, in-place KV cache")
    p.add_argument("--headline", default=None,
                   help="the variant the kv_* figures report (default float32+shared when it "
                        "runs, else the first)")
    p.add_argument("--recompute-samples", type=int, default=4)
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--optimum-python", default=None,
                   help="Python of an environment with optimum-onnx (default: "
                        "$LBDL_OPTIMUM_PYTHON, or this one if it has optimum)")
    args = p.parse_args()
    name = "gpt_mini" if args.quick else "gpt2_small"
    n_prompt, n_new = (16, 16) if args.quick else (args.prompt, args.new)
    repeat = 1 if args.quick else args.repeat
    import torch

    torch.set_num_threads(args.threads)
    entry = ZOO[name]
    manual_seed(0)
    model = entry.model()
    prompt = np.random.default_rng(0).integers(0, entry.config.vocab_size, n_prompt).tolist()
    names = args.variants.split(",")
    graphs = {s: trace_generation(model, shared_cache=s)
              for s in {v.endswith("+shared") for v in names}}
    bundles, weights, sizes = {}, {}, {}
    for v in names:
        base = v.removesuffix("+shared")
        prec, q = (base, None) if base in ("float32", "float16", "bfloat16") else \
            ("float32", base)
        export_generation(graphs[v != base], work / v, precision=prec, quantize=q)
        weights[v] = matmul_weight_bytes(work / v / "decode.onnx")
        sizes[v] = (work / v / "weights.data").stat().st_size
        bundles[v] = load_generation(work / v, threads=args.threads, providers="cpu")
    del graphs
    gc.collect()
    hf = None if args.no_hf else hf_model(entry.config)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in [*bundles, "hf"]}
    for b in bundles.values():  # warm-up
        generate(b.runner, prompt, 4)
    if hf is not None:
        hf_run(hf, prompt, 4)
    for _ in range(repeat):
        for k, b in bundles.items():
            runs[k].append(ours_run(b, prompt, n_new))
        if hf is not None:
            runs["hf"].append(hf_run(hf, prompt, n_new))
    bandwidth = copy_bandwidth()
    first = args.headline or ("float32+shared" if "float32+shared" in bundles
                              else next(iter(bundles)))
    if first not in bundles:
        p.error(f"--headline {first} is not one of the variants {list(bundles)}")
    ids = prompt + runs[first][0]["tokens"]
    del bundles
    gc.collect()
    recompute = recompute_rate(model, ids, n_prompt, args.threads, args.recompute_samples, work)

    def med(k: str, f: Any) -> float:
        return float(np.median([f(r) for r in runs[k]]))

    res: dict[str, Any] = {"model": name, "threads": args.threads, "prompt_tokens": n_prompt,
                           "new_tokens": n_new, "repeat": repeat,
                           "copy_bandwidth_gbps": bandwidth / 1e9}
    variants: dict[str, dict[str, Any]] = {}
    for k in runs:
        if k == "hf" and hf is None:
            continue
        late = med(k, lambda r: r["steps"][-32:].mean() / r["steps"][:32].mean())
        variants[k] = {"tokens_per_s": med(k, lambda r: _tps(r["steps"])),
                       "prefill_s": med(k, lambda r: r["prefill_s"]), "late_over_early": late,
                       "ms_per_token": 1000 / med(k, lambda r: _tps(r["steps"]))}
        if k in weights:
            variants[k].update(weight_bytes_per_token=weights[k], file_bytes=sizes[k],
                               cache_peak_bytes=runs[k][0]["cache_peak_bytes"],
                               bandwidth_share=variants[k]["tokens_per_s"] * weights[k]
                               / bandwidth)
    optimum, why = optimum_run(optimum_python(args.optimum_python), entry.config, n_prompt,
                               n_new, args.threads, repeat)
    opt = float(optimum["tokens_per_s"]) if optimum else None
    if optimum and opt:
        variants["optimum"] = {"tokens_per_s": opt, "prefill_s": optimum["prefill_s"],
                               "ms_per_token": 1000 / opt,
                               "versions": {k: optimum[k] for k in
                                            ("onnxruntime", "optimum_onnx", "transformers")}}
    kv = variants[first]
    hf_tps = variants["hf"]["tokens_per_s"] if "hf" in variants else None
    res.update(
        kv_tokens_per_s=kv["tokens_per_s"], hf_tokens_per_s=hf_tps,
        optimum_tokens_per_s=opt, optimum_reason=why,
        kv_vs_optimum=kv["tokens_per_s"] / opt if opt else None,
        kv_vs_hf=kv["tokens_per_s"] / hf_tps if hf_tps else None,
        recompute_tokens_per_s=recompute, kv_vs_recompute=kv["tokens_per_s"] / recompute,
        late_over_early=kv["late_over_early"], prefill_s=kv["prefill_s"],
        cache_peak_bytes=kv["cache_peak_bytes"], bandwidth_share=kv["bandwidth_share"],
        variants=variants)
    res.update(kv_variant=first, kv_cache="shared" if first.endswith("+shared") else "concat",
               shared_vs_concat={k.removesuffix("+shared"): v["tokens_per_s"]
                                 / variants[k.removesuffix("+shared")]["tokens_per_s"]
                                 for k, v in variants.items()
                                 if k.endswith("+shared") and k.removesuffix("+shared")
                                 in variants})
    for k, v in variants.items():
        if k not in (first, "hf", "optimum"):
            res[f"{k}_vs_hf"] = v["tokens_per_s"] / hf_tps if hf_tps else None
            res[f"{k}_vs_optimum"] = v["tokens_per_s"] / opt if opt else None
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{name}, batch 1, {n_prompt} prompt + {n_new} new tokens, {args.threads} thread(s), "
          f"median of {repeat}; NumPy copy {bandwidth / 1e9:.1f} GB/s (read + write)")
    for k, v in variants.items():
        extra = (f", weights/token {v['weight_bytes_per_token'] / 1e6:.0f} MB, bandwidth share "
                 f"{v['bandwidth_share']:.0%}, cache peak {v['cache_peak_bytes'] / 1e6:.1f} MB"
                 if "bandwidth_share" in v else "")
        flat = f", late/early {v['late_over_early']:.2f}" if "late_over_early" in v else ""
        print(f"  {k:14s} {v['tokens_per_s']:6.1f} tokens/s ({v['ms_per_token']:.1f} ms/token), "
              f"prefill {v['prefill_s'] * 1000:.0f} ms{flat}{extra}")
    print(f"  recompute {recompute:.2f} tokens/s -> KV cache ({first}) "
          f"{res['kv_vs_recompute']:.1f}x")
    for k, r in res["shared_vs_concat"].items():
        print(f"  {k}: shared in-place cache {r:.2f}x the concat cache")
    if hf_tps:
        print(f"  ours ({first}) vs HF: {res['kv_vs_hf']:.2f}x")
    if opt:
        print(f"  ours ({first}) vs Optimum: {res['kv_vs_optimum']:.2f}x")
    else:
        print(f"  optimum: n/a ({why})")


if __name__ == "__main__":
    main()
