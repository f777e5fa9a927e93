"""What the zoo models compute, checked against NumPy references and invariants: batch
independence, causality, padding masks, the digits upsampling, box decoding, CLIP's similarity
matrix, dueling heads, denoising noise, the VAE's sampling, time embeddings and graph
convolutions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import InputSpec, trace
from lbdl_graph.frontends.zoo import ZOO, names, normalize_adjacency
from lbdl_graph.frontends.zoo.clip import clip_loss
from lbdl_graph.frontends.zoo.detector import make_anchors
from lbdl_graph.frontends.zoo.diffusion import noise_schedule, timestep_embedding

from .helpers import feeds, run_entry, traced

# models whose samples interact: CLIP compares every image with every text, a GCN's "batch"
# is the node set of one graph
COUPLED = {"clip_tiny", "gnn", "gnn_tiny"}


@pytest.mark.parametrize("name", [n for n in names(tiny=True) if n not in COUPLED])
def test_eval_outputs_are_per_sample(name):
    inputs = feeds(name, {"N": 3}, seed=5)
    batch = run_entry(name, inputs)
    for i in (0, 2):
        one = run_entry(name, {k: v[i:i + 1] for k, v in inputs.items()})
        for k in batch:
            np.testing.assert_allclose(one[k][0], batch[k][i], rtol=2e-4, atol=2e-5,
                                       err_msg=k)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def test_mlp_matches_numpy():
    model, _ = traced("mlp_tiny")
    sd = model.state_dict()
    x = feeds("mlp_tiny", {"N": 4})["x"]
    h = _relu(x @ sd["layers.0.weight"].T + sd["layers.0.bias"])
    h = _relu(h @ sd["layers.2.weight"].T + sd["layers.2.bias"])
    ref = h @ sd["layers.4.weight"].T + sd["layers.4.bias"]
    np.testing.assert_allclose(run_entry("mlp_tiny", {"x": x})["output"], ref, rtol=1e-5,
                               atol=1e-6)


def test_lenet_digits_is_lenet_on_upsampled_padded_digits():
    digits_model, _ = traced("lenet_digits")
    lenet = ZOO["lenet"].model()
    lenet.load_state_dict(digits_model.state_dict())
    g = ZOO["lenet"].trace(lenet)
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    big = np.pad(np.kron(x, np.ones((3, 3), np.float32)), ((0, 0), (0, 0), (2, 2), (2, 2)))
    assert big.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(run_entry("lenet_digits", {"x": x})["output"],
                               run(g, {"x": big})["output"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,key", [("gpt_mini", "idx"), ("gpt_tiny", "idx"),
                                      ("char_rnn", "idx"), ("lstm_lm", "idx")])
def test_language_models_are_causal(name, key):
    inputs = feeds(name, {"N": 2, "T": 8})
    t = inputs[key].shape[1]
    base = run_entry(name, inputs)["output"]
    changed = inputs[key].copy()
    changed[:, t // 2] = (changed[:, t // 2] + 1) % ZOO[name].int_high[key]
    out = run_entry(name, {key: changed})["output"]
    np.testing.assert_allclose(out[:, :t // 2], base[:, :t // 2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[:, t // 2:], base[:, t // 2:])


def test_gpt_prefix_runs_give_the_same_logits():
    # the learned positions are looked up with iota over the symbolic T
    inputs = feeds("gpt_mini", {"N": 2, "T": 12})
    full = run_entry("gpt_mini", inputs)["output"]
    short = run_entry("gpt_mini", {"idx": inputs["idx"][:, :5]})["output"]
    np.testing.assert_allclose(short, full[:, :5], rtol=1e-5, atol=1e-5)


def test_transformer_decoder_is_causal_and_ignores_source_padding():
    inputs = feeds("transformer_tiny", {"N": 2, "S": 6, "T": 7}, seed=1)
    src = np.where(inputs["src"] == 0, 1, inputs["src"])  # no padding inside the sentence
    tgt = inputs["tgt"]
    base = run_entry("transformer_tiny", {"src": src, "tgt": tgt})["output"]
    tgt2 = tgt.copy()
    tgt2[:, 4] = (tgt2[:, 4] + 1) % 48
    out = run_entry("transformer_tiny", {"src": src, "tgt": tgt2})["output"]
    np.testing.assert_allclose(out[:, :4], base[:, :4], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[:, 4:], base[:, 4:])
    # padding the source (pad id 0) changes nothing: the masks hide the padded keys
    padded = np.concatenate([src, np.zeros((2, 3), np.int64)], 1)
    out = run_entry("transformer_tiny", {"src": padded, "tgt": tgt})["output"]
    np.testing.assert_allclose(out, base, rtol=1e-4, atol=1e-5)
    # but the source content matters
    src2 = src.copy()
    src2[:, 0] = src2[:, 0] % 39 + 1
    assert not np.allclose(run_entry("transformer_tiny", {"src": src2, "tgt": tgt})["output"],
                           base)


def test_detector_decodes_offsets_against_anchors():
    out = run_entry("detector_tiny", feeds("detector_tiny", {"N": 2}))
    anchors = make_anchors(8, ZOO["detector_tiny"].config.anchor_sizes)
    assert anchors.shape == (192, 4)
    np.testing.assert_allclose(anchors[0], [1 / 16, 1 / 16, 1 / 8, 1 / 8])
    np.testing.assert_allclose(anchors[3 * 9 + 2], [3 / 16, 3 / 16, 1 / 8, 2 / 8])  # cell (1, 1)
    d = out["deltas"]
    xy = anchors[:, :2] + d[..., :2] * anchors[:, 2:]
    wh = anchors[:, 2:] * np.exp(np.minimum(d[..., 2:], math.log(1000 / 16)))
    np.testing.assert_allclose(out["boxes"], np.concatenate([xy, wh], -1), rtol=1e-5,
                               atol=1e-6)


def test_clip_similarities_and_loss():
    model, _ = traced("clip_tiny")
    out = run_entry("clip_tiny", feeds("clip_tiny", {"N": 4, "T": 6}))
    logits = out["logits_per_image"]
    np.testing.assert_allclose(out["logits_per_text"], logits.T)
    scale = math.exp(float(model.logit_scale.data))
    assert scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert np.abs(logits).max() <= scale * (1 + 1e-5)  # cosine similarities in [-1, 1]
    g = trace(clip_loss, [("N", "N")])
    loss = run(g, {"logits_per_image": logits})["output"]
    lsm_r = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    lsm_c = logits - np.log(np.exp(logits).sum(0, keepdims=True))
    ref = -(np.diag(lsm_r).mean() + np.diag(lsm_c).mean()) / 2
    assert float(loss) == pytest.approx(ref, rel=1e-5)


def test_dueling_head_centres_the_advantages():
    model, _ = traced("dqn_dueling")
    x = feeds("dqn_dueling", {"N": 5})["obs"]
    sd = model.state_dict()
    h = _relu(x @ sd["body.0.weight"].T + sd["body.0.bias"])
    h = _relu(h @ sd["body.2.weight"].T + sd["body.2.bias"])
    v = h @ sd["value.weight"].T + sd["value.bias"]
    a = h @ sd["advantage.weight"].T + sd["advantage.bias"]
    q = run_entry("dqn_dueling", {"obs": x})["output"]
    np.testing.assert_allclose(q, v + a - a.mean(1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.mean(1, keepdims=True), v, rtol=1e-5, atol=1e-6)


def test_denoising_noise_is_added_in_training_only():
    x = feeds("denoising_autoencoder", {"N": 2})["x"]
    clean = run_entry("denoising_autoencoder", {"x": x})["output"]
    _, g = traced("denoising_autoencoder", training=True)
    k1 = run(g, {"x": x, "rng_key": np.array([1, 0])})["output"]
    k1b = run(g, {"x": x, "rng_key": np.array([1, 0])})["output"]
    k2 = run(g, {"x": x, "rng_key": np.array([2, 0])})["output"]
    np.testing.assert_array_equal(k1, k1b)  # reproducible from the key
    assert not np.allclose(k1, k2) and not np.allclose(k1, clean)
    noise = [n for n in g.nodes if n.op.name == "random_normal"]
    assert len(noise) == 1 and noise[0].source.file.endswith("autoencoder.py")


def test_vae_samples_in_training_and_uses_the_mean_in_eval():
    x = feeds("vae", {"N": 3})["x"]
    ev = run_entry("vae", {"x": x})
    _, g = traced("vae", training=True)
    tr = run(g, {"x": x, "rng_key": np.array([3, 0])})
    np.testing.assert_allclose(tr["mu"], ev["mu"], rtol=1e-6)
    np.testing.assert_allclose(tr["logvar"], ev["logvar"], rtol=1e-6)
    assert not np.allclose(tr["recon"], ev["recon"])


def test_timestep_embedding_and_schedule():
    t = np.array([0, 1, 500], np.int64)
    g = trace(lambda t: timestep_embedding(t, 8), [InputSpec(("N",), "int64", "t")])
    emb = run(g, {"t": t})["output"]
    freqs = np.exp(-math.log(10_000) * np.arange(4) / 4)
    ang = t[:, None] * freqs
    np.testing.assert_allclose(emb, np.concatenate([np.sin(ang), np.cos(ang)], 1), rtol=1e-4,
                               atol=1e-5)
    a = noise_schedule(1000)
    assert a.shape == (1000,) and a[0] == pytest.approx(1 - 1e-4) and 0 < a[-1] < 1e-3
    inputs = feeds("diffusion_denoiser", {"N": 2})
    base = run_entry("diffusion_denoiser", inputs)["output"]
    later = run_entry("diffusion_denoiser", {**inputs, "t": inputs["t"] + 1})["output"]
    assert not np.allclose(base, later)  # the time step conditions the prediction


def test_gcn_matches_numpy():
    model, _ = traced("gnn_tiny")
    inputs = feeds("gnn_tiny", {"N": 7})
    x, adj = inputs["x"], inputs["adj"]
    sd = model.state_dict()
    h = x
    for i in range(3):
        h = adj @ (h @ sd[f"layers.{i}.weight"]) + sd[f"layers.{i}.bias"]
        if i < 2:
            h = _relu(h)
    np.testing.assert_allclose(run_entry("gnn_tiny", inputs)["output"], h, rtol=1e-4,
                               atol=1e-5)


def test_normalize_adjacency():
    a = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32)
    n = normalize_adjacency(a)
    deg = np.array([2.0, 3.0, 2.0])
    ref = (a + np.eye(3)) / np.sqrt(deg[:, None] * deg[None, :])
    np.testing.assert_allclose(n, ref, rtol=1e-6)
    assert np.linalg.eigvalsh(n).max() == pytest.approx(1.0, abs=1e-5)


def test_gan_scores_its_own_fakes():
    out = run_entry("gan", feeds("gan", {"N": 2}))
    assert np.abs(out["fake"]).max() < 1.0  # tanh
    gan, _ = traced("gan")
    g = trace(gan.discriminator, [("N", 1, 28, 28)], training=False)
    np.testing.assert_allclose(run(g, {"images": out["fake"]})["output"], out["d_fake"],
                               rtol=1e-5, atol=1e-6)


def test_unet_keeps_the_resolution_and_uses_its_skips():
    inputs = feeds("unet_tiny", {"N": 1})
    base = run_entry("unet_tiny", inputs)["output"]
    assert base.shape == (1, 4, 32, 32)
    # a single pixel changes nearby logits strongly through the full-resolution skip
    x = inputs["x"].copy()
    x[0, :, 0, 0] += 5.0
    diff = np.abs(run_entry("unet_tiny", {"x": x})["output"] - base).sum((0, 1))
    assert diff[0, 0] > 0 and diff[0, 0] > diff[31, 31]


def test_vae_loss_is_the_negative_elbo():
    from lbdl_graph.frontends.zoo import vae_loss

    rng = np.random.default_rng(2)
    recon, target = rng.standard_normal((3, 5)), rng.random((3, 5))
    mu, logvar = rng.standard_normal((3, 2)), rng.standard_normal((3, 2)) * 0.5
    arrays = [a.astype(np.float32) for a in (recon, target, mu, logvar)]
    g = trace(vae_loss, [("N", 5), ("N", 5), ("N", 2), ("N", 2)])
    loss = run(g, dict(zip(["recon", "target", "mu", "logvar"], arrays, strict=True)))
    bce = np.maximum(recon, 0) - recon * target + np.log1p(np.exp(-np.abs(recon)))
    kl = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1)
    assert float(loss["output"]) == pytest.approx((bce.sum(1) + kl.sum(1)).mean(), rel=1e-5)
