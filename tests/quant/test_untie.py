"""``quantize_weights(untie=True)``: a tied embedding/head gets a quantised copy for the head."""

from __future__ import annotations

import numpy as np

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.zoo import GPT, GPTConfig
from lbdl_graph.passes.quant.weights import quantize_weights


def test_untie_quantises_the_tied_head_and_keeps_the_embedding_float() -> None:
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, context=16, num_layers=1, d_model=32, num_heads=2,
                          dropout=0.0))
    g = trace(model, {"idx": InputSpec(("N", "T"), "int64")}, training=False)
    plain = quantize_weights(g, "q8_0")
    assert plain.stats["skipped"] == 1  # the tied tok_emb.weight stays float
    untied = quantize_weights(g, "q8_0", untie=True)
    assert untied.stats["skipped"] == 0 and untied.stats["weights"] == plain.stats["weights"] + 1
    gather = next(n for n in untied.graph.nodes if n.op.name == "gather")
    emb = untied.graph.param_of(gather.inputs[0])
    assert emb is not None and emb.name == "tok_emb.weight" and emb.data.dtype == np.float32
    assert "tok_emb.weight.untied" in untied.graph.metadata["quantization"]["weights"]
    x = np.array([[1, 5, 9, 33]])
    ref = run(g, {"idx": x}, training=False)["output"]
    got = run(untied.graph, {"idx": x}, training=False)["output"]
    assert np.abs(got - ref).max() < 2e-2 * np.abs(ref).max()
