"""Sequence-to-sequence with additive attention (glossaries; Bahdanau et al. 2015): reversal.

The task: read 10 hex digits, write them in reverse order. The model is an RNN encoder-decoder: a
bidirectional GRU encoder (``nn.GRU(..., bidirectional=True)``) over the embedded source, a
bridge from its two final states to the decoder's initial state, and a GRU decoder that at every
step attends over the encoder states with ``nn.AdditiveAttention`` (``v · tanh(W_q s + W_k h)``)
and predicts the next digit from its state, the context and the previous digit. It is trained
with teacher forcing (cross-entropy, Adam) and evaluated by greedy decoding, one step per run of
the graph (the decoder is causal: digits not yet decoded are zeros and do not change earlier
logits), as exact-match accuracy on held-out sequences. Baselines from the same run: copying
the input, and the same encoder-decoder without attention (the decoder reads only the bridged
final state), trained for the same steps. The recurrences are unrolled at the fixed length 10.
ONNX Runtime is checked against NumPy on the exported model.

    python examples/seq2seq_attention.py     # 1000 steps of 64 sequences per model (about 20 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, parse_args, run_graph, stage

from lbdl_graph.frontends import InputSpec, manual_seed, nn, trace
from lbdl_graph.frontends import functional as F
from lbdl_graph.frontends.tensor import Tensor
from lbdl_graph.frontends.training import fit
from lbdl_graph.graph import Graph
from lbdl_graph.passes.optim import Adam, CosineLR

L, V = 10, 16  # sequence length, symbols (hex digits; L != V keeps the class axis of
# the (N, L, V) logits unambiguous for cross_entropy, which also reads (N, C, d) as torch does)
BOS = V  # the decoder's start symbol (an extra row of its embedding)


class Seq2Seq(nn.Module):
    """``forward(src, tgt_in)``: digits (N, L) and the shifted target (BOS, y_0 .. y_{L-2})
    -> logits (N, L, V)."""

    def __init__(self, embed: int = 16, hidden: int = 32, attn: int = 32,
                 attention: bool = True) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(V, embed)
        self.tgt_embed = nn.Embedding(V + 1, embed)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.attention = nn.AdditiveAttention(hidden, 2 * hidden, attn) if attention else None
        ctx = 2 * hidden if attention else 0
        self.decoder = nn.GRU(embed + ctx, hidden)
        self.out = nn.Linear(hidden + ctx + embed, V)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        enc, h_n = self.encoder(self.src_embed(src))  # (N, L, 2H), (2, N, H)
        s = self.bridge(F.cat([h_n[0], h_n[1]], -1)).tanh()
        keys = self.attention.project_keys(enc) if self.attention is not None else None
        emb = self.tgt_embed(tgt_in)
        logits = []
        for t in range(L):
            e = emb[:, t]
            feats = [e]
            if self.attention is not None:
                ctx, _ = self.attention(s, enc, projected_keys=keys)
                feats = [e, ctx]
            _, h = self.decoder(F.cat(feats, -1).unsqueeze(0), s.unsqueeze(0))
            s = h[0]
            logits.append(self.out(F.cat([s, *feats[1:], e], -1)))
        return F.stack(logits, 1)


def shifted(y: np.ndarray) -> np.ndarray:
    """The teacher-forcing decoder input: BOS then y without its last digit."""
    return np.concatenate([np.full((len(y), 1), BOS, np.int64), y[:, :-1]], 1)


def greedy(graph: Graph, src: np.ndarray) -> np.ndarray:
    """Decode L digits one at a time, each run seeing the digits decoded so far."""
    out = np.zeros_like(src)
    for t in range(L):
        logits = run_graph(graph, {"src": src, "tgt_in": shifted(out)})["output"]
        out[:, t] = logits[:, t].argmax(-1)
    return out


def train(model: Seq2Seq, src: np.ndarray, steps: int, backend: str, seed: int) -> float:
    tgt = src[:, ::-1].copy()
    hist = fit(model, {"src": src, "tgt_in": shifted(tgt)}, tgt, loss="cross_entropy",
               epochs=100, batch_size=64, max_steps=steps, optimizer=Adam(CosineLR(1e-2, steps)),
               clip_grad_norm=1.0, backend=backend, seed=seed, progress=False)
    return float(hist["loss"][-1])


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 1000, "training steps per model")})
    steps = 3 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    src, test = rng.integers(0, V, (4096, L)), rng.integers(0, V, (500, L))
    want = test[:, ::-1]
    spec = {"src": InputSpec(("N", L), "int64"), "tgt_in": InputSpec(("N", L), "int64")}
    exact = {"copy the input (baseline)": float((test == want).all(1).mean())}
    per_digit = {"copy the input (baseline)": float((test == want).mean())}
    graph = None
    for attention in (False, True):
        label = ("bidirectional GRU + additive attention" if attention else
                 "bidirectional GRU, no attention (baseline)")
        manual_seed(args.seed)
        model = Seq2Seq(attention=attention)
        with stage(f"training {label}: {steps} steps of 64, {model.num_parameters():,} "
                   f"parameters, on {args.backend}"):
            loss = train(model, src, steps, args.backend, args.seed)
        print(f"  final training loss {loss:.4f}")
        graph = trace(model, spec, training=False)
        got = greedy(graph, test)
        exact[label] = float((got == want).all(1).mean())
        per_digit[label] = float((got == want).mean())
    for label in exact:
        print(f"held-out exact match ({len(test)} sequences of {L}): {label:<44} "
              f"{exact[label]:.3f}  (per symbol {per_digit[label]:.3f})")
    assert graph is not None
    check_onnx(graph, {"src": test[:32], "tgt_in": shifted(want[:32])}, args.out,
               "seq2seq_attention")


if __name__ == "__main__":
    main()
