"""Hugging Face checkpoints -> zoo models with no glue: GPT-2, BERT and ViT directories written
by transformers' ``save_pretrained`` from random-init models, logits against transformers on
the same input; bad directories give typed errors naming the file and the tensor (skipped
without torch/transformers)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import CheckpointError
from lbdl_graph.frontends import InputSpec, trace
from lbdl_graph.frontends.zoo import GPT, Bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def perturbed(model: Any) -> Any:
    """A random-init model whose biases and norms are not all zeros and ones."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def save(model: Any, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(path)
    return path


def gpt2_config(**kw: Any) -> Any:
    return transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                   n_head=4, bos_token_id=0, eos_token_id=0, **kw)


def logits_of(model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    specs = {k: InputSpec(("N", *v.shape[1:]) if k != "idx" else ("N", "T"), v.dtype)
             for k, v in inputs.items()}
    return run(trace(model, specs, training=False), inputs)


@pytest.mark.parametrize("kw", [{}, {"tie_word_embeddings": False, "activation_function": "gelu",
                                     "n_inner": 48}])
def test_gpt2_logits_match_transformers(tmp_path: Path, kw: dict[str, Any]) -> None:
    torch.manual_seed(0)
    hf = perturbed(transformers.GPT2LMHeadModel(gpt2_config(**kw)))
    model = GPT.from_hf(save(hf, tmp_path / "gpt2"))
    c = model.config
    assert (c.vocab_size, c.context, c.num_layers, c.d_model, c.num_heads) == (64, 16, 2, 32, 4)
    assert c.tie_weights == (not kw) and c.ff == kw.get("n_inner", 128)
    ids = np.random.default_rng(0).integers(0, 64, (2, 11))
    ref = hf(torch.from_numpy(ids)).logits.detach().numpy()
    out = logits_of(model, {"idx": ids})["output"]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_gpt2_model_without_head_gives_hidden_states(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = perturbed(transformers.GPT2Model(gpt2_config()))
    model = GPT.from_hf(save(hf, tmp_path / "gpt2"))
    assert not model.config.head
    ids = np.random.default_rng(1).integers(0, 64, (3, 7))
    ref = hf(torch.from_numpy(ids)).last_hidden_state.detach().numpy()
    np.testing.assert_allclose(logits_of(model, {"idx": ids})["output"], ref, rtol=0,
                               atol=1e-5)


@pytest.fixture
def gpt2_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "gpt2")


def test_missing_files_name_the_directory(tmp_path: Path, gpt2_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        GPT.from_hf(tmp_path / "nowhere")
    (gpt2_dir / "model.safetensors").rename(tmp_path / "weights.bin")
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        GPT.from_hf(gpt2_dir)
    (gpt2_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        GPT.from_hf(gpt2_dir)


def test_corrupt_weights_name_the_file(gpt2_dir: Path) -> None:
    (gpt2_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors as safetensors"):
        GPT.from_hf(gpt2_dir)


def test_wrong_architecture_is_refused(tmp_path: Path) -> None:
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=64)
    d = save(transformers.BertModel(cfg), tmp_path / "bert")
    with pytest.raises(CheckpointError, match=r"model_type 'bert'.*not a GPT-2 checkpoint"):
        GPT.from_hf(d)


def edit_config(d: Path, **changes: Any) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_shape_mismatch_names_the_tensor_and_file(gpt2_dir: Path) -> None:
    edit_config(gpt2_dir, n_embd=48, n_head=4)
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'wte.weight' \[64, "
                                              r"32\] gives \[64, 32\] for tok_emb.weight, which "
                                              r"the config needs as \[64, 48\]"):
        GPT.from_hf(gpt2_dir)


def test_missing_and_extra_tensors(gpt2_dir: Path) -> None:
    edit_config(gpt2_dir, n_layer=3)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['h.2.ln_1.weight'"):
        GPT.from_hf(gpt2_dir)
    edit_config(gpt2_dir, n_layer=1)
    with pytest.raises(CheckpointError, match=r"tensor\(s\) \['h.1.attn.c_attn.bias'.*no "
                                              "place in GPT"):
        GPT.from_hf(gpt2_dir)
    assert GPT.from_hf(gpt2_dir, strict=False).config.num_layers == 1


def test_unsupported_config_is_refused(gpt2_dir: Path) -> None:
    edit_config(gpt2_dir, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx=true"):
        GPT.from_hf(gpt2_dir)
    edit_config(gpt2_dir, scale_attn_by_inverse_layer_idx=False, activation_function="quick")
    with pytest.raises(CheckpointError, match="activation_function 'quick'"):
        GPT.from_hf(gpt2_dir)


# ---- BERT ----


def bert_config(**kw: Any) -> Any:
    return transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=16, **kw)


@pytest.mark.parametrize("arch", ["BertModel", "BertForMaskedLM"])
def test_bert_matches_transformers_with_segments_and_padding(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    hf = perturbed(getattr(transformers, arch)(bert_config()))
    d = save(hf, tmp_path / "bert")
    if arch == "BertForMaskedLM":  # the MLM head has no place in the encoder
        with pytest.raises(CheckpointError, match=r"cls\.predictions.*no place in Bert"):
            Bert.from_hf(d)
        model = Bert.from_hf(d, strict=False)
        assert not model.config.pooler  # BertForMaskedLM has no pooler
        encoder = hf.bert
    else:
        model = Bert.from_hf(d)
        encoder = hf
    rng = np.random.default_rng(0)
    ids, types = rng.integers(0, 64, (2, 10)), rng.integers(0, 2, (2, 10))
    mask = np.ones((2, 10), np.int64)
    mask[1, 6:] = 0
    feeds = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    specs = {k: InputSpec(("N", "T"), "int64") for k in feeds}
    out = run(trace(model, specs, training=False), feeds)
    with torch.no_grad():
        ref = encoder(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    np.testing.assert_allclose(out["last_hidden_state"], ref.last_hidden_state.numpy(), rtol=0,
                               atol=1e-5)
    if model.config.pooler:
        np.testing.assert_allclose(out["pooler_output"], ref.pooler_output.numpy(), rtol=0,
                                   atol=1e-5)


def test_bert_defaults_and_bad_configs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = perturbed(transformers.BertModel(bert_config()))
    d = save(hf, tmp_path / "bert")
    model = Bert.from_hf(d)
    c = model.config
    assert (c.vocab_size, c.max_position, c.d_model, c.num_layers, c.d_ff, c.eps) == (
        64, 16, 32, 2, 64, 1e-12)
    ids = np.random.default_rng(2).integers(0, 64, (3, 7))
    out = run(trace(model, {"input_ids": InputSpec(("N", "T"), "int64")}, training=False),
              {"input_ids": ids})
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(out["last_hidden_state"], ref, rtol=0, atol=1e-5)
    edit_config(d, position_embedding_type="relative_key")
    with pytest.raises(CheckpointError, match="position_embedding_type='relative_key'"):
        Bert.from_hf(d)
    with pytest.raises(CheckpointError, match=r"model_type 'gpt2'.*not a BERT checkpoint"):
        Bert.from_hf(save(transformers.GPT2Model(gpt2_config()), tmp_path / "gpt2"))


def test_bfloat16_checkpoint_loads_exactly_widened(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = perturbed(transformers.GPT2LMHeadModel(gpt2_config())).to(torch.bfloat16)
    d = save(hf, tmp_path / "gpt2")
    model = GPT.from_hf(d)
    hf = hf.float()  # the same (bfloat16-representable) weights, computed in float32
    np.testing.assert_array_equal(model.tok_emb.weight.data,
                                  hf.transformer.wte.weight.detach().numpy())
    ids = np.random.default_rng(3).integers(0, 64, (2, 5))
    ref = hf(torch.from_numpy(ids)).logits.detach().numpy()
    np.testing.assert_allclose(logits_of(model, {"idx": ids})["output"], ref, rtol=0, atol=1e-5)
