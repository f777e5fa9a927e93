"""transformers ViT (``ViTModel`` / ``ViTForImageClassification`` ``save_pretrained``
directories) -> the zoo's :class:`~lbdl_graph.frontends.zoo.vit.ViT`.

transformers keeps q, k, v apart (stacked here into ``attn.in_proj_weight``, in that order) and
names the pre-LN block's norms ``layernorm_before``/``layernorm_after``. ``ViTModel``'s tanh
pooler is not part of the zoo ViT (whose output without a head is the normalised CLS state,
transformers' ``last_hidden_state[:, 0]``) and is skipped; ``qkv_bias=false`` loads zero biases.
"""

from __future__ import annotations

import os

import numpy as np

from lbdl_graph.errors import CheckpointError

from .. import vit
from ._io import (
    Rule,
    cat,
    config_value,
    convert,
    expect_config,
    load_into,
    read_hf_dir,
    rule,
    strip_prefix,
)

__all__ = ["HF_TABLE", "load_vit_hf"]

_L = "encoder.layer.{i}."
_QKV = tuple(f"{_L}attention.attention.{p}" for p in ("query", "key", "value"))


def _zero_qkv_bias(xs: list[np.ndarray]) -> np.ndarray:
    return np.zeros(3 * xs[0].shape[0], xs[0].dtype)


HF_TABLE = [
    rule("cls_token", "embeddings.cls_token"),
    rule("pos_embed", "embeddings.position_embeddings"),
    rule("patch_embed.weight", "embeddings.patch_embeddings.projection.weight"),
    rule("patch_embed.bias", "embeddings.patch_embeddings.projection.bias"),
    rule("layers.{i}.ln1.weight", f"{_L}layernorm_before.weight"),
    rule("layers.{i}.ln1.bias", f"{_L}layernorm_before.bias"),
    rule("layers.{i}.attn.in_proj_weight", *(f"{p}.weight" for p in _QKV), how=cat),
    rule("layers.{i}.attn.out_proj.weight", f"{_L}attention.output.dense.weight"),
    rule("layers.{i}.attn.out_proj.bias", f"{_L}attention.output.dense.bias"),
    rule("layers.{i}.ln2.weight", f"{_L}layernorm_after.weight"),
    rule("layers.{i}.ln2.bias", f"{_L}layernorm_after.bias"),
    rule("layers.{i}.mlp.fc1.weight", f"{_L}intermediate.dense.weight"),
    rule("layers.{i}.mlp.fc1.bias", f"{_L}intermediate.dense.bias"),
    rule("layers.{i}.mlp.fc2.weight", f"{_L}output.dense.weight"),
    rule("layers.{i}.mlp.fc2.bias", f"{_L}output.dense.bias"),
    rule("norm.weight", "layernorm.weight"),
    rule("norm.bias", "layernorm.bias"),
]
HF_QKV_BIAS = rule("layers.{i}.attn.in_proj_bias", *(f"{p}.bias" for p in _QKV), how=cat)
HF_NO_QKV_BIAS = Rule("layers.{i}.attn.in_proj_bias", (f"{_QKV[0]}.weight",), _zero_qkv_bias)
HF_HEAD = [rule("head.0.weight", "classifier.weight"), rule("head.0.bias", "classifier.bias")]
HF_IGNORED = ("pooler.dense.weight", "pooler.dense.bias")

def load_vit_hf(path: str | os.PathLike[str], *, strict: bool = True) -> vit.ViT:
    """A zoo ViT with the weights of a transformers ``save_pretrained`` directory."""
    from ... import init

    ck = read_hf_dir(path)
    expect_config(ck, ("vit",), "ViT")
    strip_prefix(ck, ("vit.", ""), "embeddings.cls_token")
    act = config_value(ck, "hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{ck.where}/config.json: hidden_act {act!r}; the zoo ViT uses "
                              "'gelu'")
    has_head = "classifier.weight" in ck.tensors
    c = vit.ViTConfig(
        image_size=int(config_value(ck, "image_size")),
        patch_size=int(config_value(ck, "patch_size")),
        in_channels=int(config_value(ck, "num_channels", 3)),
        num_classes=int(ck.tensors["classifier.weight"].shape[0]) if has_head else 0,
        d_model=int(config_value(ck, "hidden_size")),
        num_layers=int(config_value(ck, "num_hidden_layers")),
        num_heads=int(config_value(ck, "num_attention_heads")),
        d_ff=int(config_value(ck, "intermediate_size")),
        eps=float(config_value(ck, "layer_norm_eps", 1e-12)),
    )
    qkv = HF_QKV_BIAS if ck.config.get("qkv_bias", True) else HF_NO_QKV_BIAS
    table = [*HF_TABLE, qkv, *(HF_HEAD if has_head else [])]
    with init.skip_random():
        model = vit.ViT(c)
    state = convert(ck, table, c.num_layers, model, strict=strict, ignore=HF_IGNORED)
    return load_into(model, state, ck.where)  # type: ignore[return-value]
