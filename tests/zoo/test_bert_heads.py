"""The zoo's BERT heads: the MLM head is tied to the token table, the classifier pools."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import ShapeError
from lbdl_graph.frontends import InputSpec, manual_seed, trace
from lbdl_graph.frontends.zoo import BertConfig, BertForMaskedLM, BertForSequenceClassification

CFG = BertConfig(vocab_size=40, max_position=16, d_model=16, num_layers=1, num_heads=2,
                 d_ff=32, dropout=0.0, pooler=False)
SPEC = {"input_ids": InputSpec(("N", "T"), "int64")}


def test_mlm_logits_use_the_token_table() -> None:
    manual_seed(0)
    m = BertForMaskedLM(CFG)
    assert m.num_parameters() == (m.bert.num_parameters() + 16 * 16 + 16 + 2 * 16 + 40)
    ids = np.random.default_rng(0).integers(0, 40, (2, 7))
    out = run(trace(m, SPEC, training=False), {"input_ids": ids})["output"]
    assert out.shape == (2, 7, 40)
    m.bert.embeddings.word.weight.data[:] = 0.0  # the tied table: logits collapse to the bias
    out0 = run(trace(m, SPEC, training=False), {"input_ids": ids})["output"]
    np.testing.assert_allclose(out0, np.broadcast_to(m.decoder_bias.data, out0.shape), atol=1e-6)


def test_classifier_mean_pooling_and_transfer() -> None:
    manual_seed(0)
    mlm = BertForMaskedLM(CFG)
    clf = BertForSequenceClassification(CFG, num_labels=3, pooling="mean")
    clf.bert.load_state_dict(mlm.bert.state_dict())
    ids = np.random.default_rng(1).integers(3, 40, (4, 6))
    g = trace(clf, SPEC, training=False)
    logits = run(g, {"input_ids": ids})["output"]
    h = run(trace(mlm.bert, SPEC, training=False), {"input_ids": ids})["last_hidden_state"]
    w, b = clf.classifier.weight.data, clf.classifier.bias.data
    np.testing.assert_allclose(logits, h.mean(1) @ w.T + b, atol=1e-5)


def test_classifier_rejects_bad_pooling() -> None:
    with pytest.raises(ShapeError, match="pooling must be"):
        BertForSequenceClassification(CFG, pooling="max")
    with pytest.raises(ShapeError, match="pooler=True"):
        BertForSequenceClassification(CFG, pooling="cls")


def test_mlm_logits_at_masked_positions_only() -> None:
    manual_seed(0)
    m = BertForMaskedLM(CFG)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 40, (3, 9))
    pos = np.stack([rng.choice(9, 4, replace=False) for _ in range(3)]).astype(np.int64)
    full = run(trace(m, SPEC, training=False), {"input_ids": ids})["output"]
    spec = {**SPEC, "masked_positions": InputSpec(("N", "K"), "int64")}
    got = run(trace(m, spec, training=False), {"input_ids": ids, "masked_positions": pos}
              )["output"]
    assert got.shape == (3, 4, 40)
    np.testing.assert_allclose(got, np.take_along_axis(full, pos[..., None], 1), atol=1e-5)


def test_mlm_masked_positions_must_be_a_matrix() -> None:
    manual_seed(0)
    m = BertForMaskedLM(CFG)
    spec = {**SPEC, "masked_positions": InputSpec(("N",), "int64")}
    with pytest.raises(ShapeError, match="masked_positions must be"):
        trace(m, spec)
