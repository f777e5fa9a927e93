"""Memory and communication per GPU per step for GPT-2 small and medium (docs/distributed.md).

Arithmetic, not a measurement: ``python benchmarks/distributed_plan.py [--json] [--check]``.
Parameter counts come from the architecture (``--check`` builds both models with the zoo's
``GPT`` and compares ``num_parameters()``). Assumptions, all stated in the output:

- fp32 training with Adam, the way this project trains: 4 bytes of weights, 4 of gradients
  and 8 of Adam moments per parameter (16; ZeRO's mixed-precision count 2 + 2 + 12 is 16 too);
- global batch 512 sequences of 1024 tokens (GPT-2's), micro-batches of 8 sequences per GPU
  (gradient accumulation), no activation recomputation;
- activations per layer and micro-batch from Korthikanti et al. (2022), doubled for fp32:
  2·s·b·h·(34 + 5·a·s/h) bytes, with tensor parallelism t: 2·s·b·h·(10 + 24/t + 5·a·s/(h·t)),
  plus the fp32 logits s·b·V·4 (divided by t with a vocabulary-parallel head);
- collectives as rings: an all-reduce sends 2(n-1)/n of the buffer per GPU, a reduce-scatter
  or all-gather (n-1)/n; pipeline boundaries send activations forward and gradients back.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

GLOBAL_BATCH, SEQ, MICRO = 512, 1024, 8
GPUS = (8, 64)
GB = 1e9


@dataclass(frozen=True)
class Model:
    """A GPT-2 size."""

    name: str
    layers: int
    d: int
    heads: int
    vocab: int = 50257
    context: int = 1024

    @property
    def layer_params(self) -> int:
        """One block: LN, attention (qkv + out), LN, MLP (4d), with biases."""
        return 12 * self.d * self.d + 13 * self.d

    @property
    def embedding_params(self) -> int:
        """Token (tied with the head) and position embeddings."""
        return (self.vocab + self.context) * self.d

    @property
    def params(self) -> int:
        """Every parameter (ln_f included)."""
        return self.layers * self.layer_params + self.embedding_params + 2 * self.d

    def activations(self, b: int, t: int = 1) -> float:
        """Bytes of stored activations of one micro-batch of b sequences, all layers."""
        s, h, a = SEQ, self.d, self.heads
        per_layer = 2 * s * b * h * (10 + 24 / t + 5 * a * s / (h * t)) if t > 1 else \
            2 * s * b * h * (34 + 5 * a * s / h)
        return self.layers * per_layer + 4 * s * b * self.vocab / t


SMALL = Model("gpt2_small", 12, 768, 12)
MEDIUM = Model("gpt2_medium", 24, 1024, 16)


def ring(n: int, nbytes: float, kind: str = "all_reduce") -> float:
    """Bytes one GPU sends in a ring collective over n GPUs."""
    share = (n - 1) / n if n > 1 else 0.0
    return (2 if kind == "all_reduce" else 1) * share * nbytes


def largest_divisor(limit: int, *of: int) -> int:
    """The largest k <= limit that divides every number in ``of``."""
    return max(k for k in range(1, limit + 1) if all(x % k == 0 for x in of))


def plans(m: Model, n: int) -> list[dict[str, Any]]:
    """One row per strategy at n GPUs: memory (GB) and bytes sent per GPU per step (GB)."""
    psi = m.params
    act = m.activations(MICRO)
    micro_steps = GLOBAL_BATCH // n // MICRO  # micro-batches per GPU per step (pure DP)
    rows = [
        {"strategy": "data parallel (this project)", "layout": f"DP {n}",
         "states_gb": 16 * psi / GB, "activations_gb": act / GB,
         "sent_gb": ring(n, 4 * psi) / GB, "messages": "1 all-reduce of the gradients"},
        {"strategy": "ZeRO-1 (optimizer state sharded)", "layout": f"DP {n}",
         "states_gb": (8 * psi + 8 * psi / n) / GB, "activations_gb": act / GB,
         "sent_gb": (ring(n, 4 * psi, "reduce_scatter") + ring(n, 4 * psi, "all_gather")) / GB,
         "messages": "reduce-scatter gradients, all-gather parameters"},
        {"strategy": "ZeRO-2 (+ gradients sharded)", "layout": f"DP {n}",
         "states_gb": (4 * psi + 12 * psi / n) / GB, "activations_gb": act / GB,
         "sent_gb": (ring(n, 4 * psi, "reduce_scatter") + ring(n, 4 * psi, "all_gather")) / GB,
         "messages": "reduce-scatter per bucket during backward, all-gather parameters"},
    ]
    t = largest_divisor(8, m.heads, n)
    dp = n // t
    tokens_bytes = 4 * SEQ * MICRO * m.d  # one activation tensor (s, b, h) in fp32
    mb = GLOBAL_BATCH // dp // MICRO
    rows.append({
        "strategy": "tensor parallel (Megatron) x data parallel", "layout": f"TP {t} x DP {dp}",
        "states_gb": 16 * psi / t / GB, "activations_gb": m.activations(MICRO, t) / GB,
        "sent_gb": (mb * (4 * m.layers + 2) * ring(t, tokens_bytes) + ring(dp, 4 * psi / t)) / GB,
        "messages": f"{4 * m.layers + 2} activation all-reduces per micro-batch in TP, "
                    "gradient all-reduce in DP"})
    p = largest_divisor(8, m.layers, n)
    dp = n // p
    mb = GLOBAL_BATCH // dp // MICRO
    stage = m.layers // p * m.layer_params
    # the first stage holds the embeddings and, with 1F1B, min(p, micro-batches) micro-batches
    # in flight (the last stage holds the tied head, one micro-batch and the logits; its
    # head gradient is all-reduced with the first stage's embedding gradient)
    first = stage + m.embedding_params
    per_layer = (m.activations(MICRO) - 4 * SEQ * MICRO * m.vocab) / m.layers
    rows.append({
        "strategy": "pipeline (1F1B) x data parallel, first stage", "layout": f"PP {p} x DP {dp}",
        "states_gb": 16 * first / GB,
        "activations_gb": min(p, mb) * (m.layers // p) * per_layer / GB,
        "sent_gb": (2 * mb * tokens_bytes + ring(dp, 4 * first)
                    + ring(2, 4 * m.vocab * m.d)) / GB,
        "messages": f"{2 * mb} point-to-point activation/gradient sends, bubble "
                    f"{(p - 1) / (mb + p - 1):.0%}"})
    for r in rows:
        r.update(model=m.name, gpus=n, micro_batches_dp=micro_steps,
                 total_gb=r["states_gb"] + r["activations_gb"])
    return rows


def check_counts() -> dict[str, int]:
    """The zoo's GPT parameter counts of both sizes (builds them: about 2 GB of memory)."""
    from lbdl_graph.frontends import manual_seed
    from lbdl_graph.frontends.zoo.gpt import GPT, GPTConfig

    out = {}
    for m in (SMALL, MEDIUM):
        manual_seed(0)
        cfg = GPTConfig(num_layers=m.layers, d_model=m.d, num_heads=m.heads)
        out[m.name] = GPT(cfg).num_parameters()
        if out[m.name] != m.params:
            raise SystemExit(f"{m.name}: the zoo has {out[m.name]:,} parameters, the formula "
                             f"{m.params:,}")
    return out


def main() -> None:
    """Print the tables (markdown) or JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", action="store_true", help="compare with the zoo's models")
    args = p.parse_args()
    counts = check_counts() if args.check else None
    rows = [r for m in (SMALL, MEDIUM) for n in GPUS for r in plans(m, n)]
    if args.json:
        print(json.dumps({"models": {m.name: {**asdict(m), "params": m.params}
                                     for m in (SMALL, MEDIUM)},
                          "zoo_counts": counts, "rows": rows}))
        return
    for m in (SMALL, MEDIUM):
        print(f"{m.name}: {m.params:,} parameters" + (" (zoo agrees)" if counts else ""))
    print("| model | GPUs | strategy | layout | model states GB | activations GB | total GB "
          "| sent per GPU per step GB |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['gpus']} | {r['strategy']} | {r['layout']} | "
              f"{r['states_gb']:.2f} | {r['activations_gb']:.2f} | {r['total_gb']:.2f} | "
              f"{r['sent_gb']:.2f} |")


if __name__ == "__main__":
    main()
