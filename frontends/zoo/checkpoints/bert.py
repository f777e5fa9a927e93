"""BERT (transformers ``BertModel``, or the ``bert.`` encoder of ``BertFor...``) -> the zoo's
:class:`~lbdl_graph.frontends.zoo.bert.Bert`.

transformers keeps the query, key and value projections apart (``attention.self.query``, ...);
the zoo's attention stacks them into ``attn.in_proj_weight`` (3D, D) in that order. The LayerNorm
after attention (``attention.output.LayerNorm``) is the post-LN block's ``ln1``, the one after
the feed-forward block (``output.LayerNorm``) its ``ln2``.
"""

from __future__ import annotations

import os

from lbdl_graph.errors import CheckpointError

from .. import bert
from ._io import (
    Checkpoint,
    cat,
    config_value,
    convert,
    expect_config,
    load_into,
    read_hf_dir,
    rule,
    strip_prefix,
)
from .gpt2 import ACTIVATIONS

__all__ = ["TABLE", "config_from_hf", "load_bert"]

_L = "encoder.layer.{i}."
_QKV = tuple(f"{_L}attention.self.{p}" for p in ("query", "key", "value"))

TABLE = [
    rule("embeddings.word.weight", "embeddings.word_embeddings.weight"),
    rule("embeddings.position.weight", "embeddings.position_embeddings.weight"),
    rule("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight"),
    rule("embeddings.norm.weight", "embeddings.LayerNorm.weight"),
    rule("embeddings.norm.bias", "embeddings.LayerNorm.bias"),
    rule("layers.{i}.attn.in_proj_weight", *(f"{p}.weight" for p in _QKV), how=cat),
    rule("layers.{i}.attn.in_proj_bias", *(f"{p}.bias" for p in _QKV), how=cat),
    rule("layers.{i}.attn.out_proj.weight", f"{_L}attention.output.dense.weight"),
    rule("layers.{i}.attn.out_proj.bias", f"{_L}attention.output.dense.bias"),
    rule("layers.{i}.ln1.weight", f"{_L}attention.output.LayerNorm.weight"),
    rule("layers.{i}.ln1.bias", f"{_L}attention.output.LayerNorm.bias"),
    rule("layers.{i}.mlp.fc1.weight", f"{_L}intermediate.dense.weight"),
    rule("layers.{i}.mlp.fc1.bias", f"{_L}intermediate.dense.bias"),
    rule("layers.{i}.mlp.fc2.weight", f"{_L}output.dense.weight"),
    rule("layers.{i}.mlp.fc2.bias", f"{_L}output.dense.bias"),
    rule("layers.{i}.ln2.weight", f"{_L}output.LayerNorm.weight"),
    rule("layers.{i}.ln2.bias", f"{_L}output.LayerNorm.bias"),
]
POOLER = [rule("pooler.weight", "pooler.dense.weight"), rule("pooler.bias", "pooler.dense.bias")]
#: buffers some transformers versions save (position and token-type id tables)
IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids")


def config_from_hf(ck: Checkpoint) -> bert.BertConfig:
    """The :class:`BertConfig` of a BERT ``config.json`` (dropout 0: loaded for inference)."""
    expect_config(ck, ("bert",), "BERT")
    act = config_value(ck, "hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{ck.where}/config.json: hidden_act {act!r} is not one of "
                              f"{sorted(ACTIVATIONS)}")
    pos = ck.config.get("position_embedding_type", "absolute")
    if pos != "absolute" or ck.config.get("is_decoder"):
        raise CheckpointError(f"{ck.where}/config.json: position_embedding_type={pos!r}, "
                              f"is_decoder={ck.config.get('is_decoder')}: the zoo Bert is the "
                              "absolute-position encoder")
    return bert.BertConfig(
        vocab_size=int(config_value(ck, "vocab_size")),
        max_position=int(config_value(ck, "max_position_embeddings")),
        type_vocab_size=int(config_value(ck, "type_vocab_size", 2)),
        d_model=int(config_value(ck, "hidden_size")),
        num_layers=int(config_value(ck, "num_hidden_layers")),
        num_heads=int(config_value(ck, "num_attention_heads")),
        d_ff=int(config_value(ck, "intermediate_size")),
        dropout=0.0,
        activation=ACTIVATIONS[act],
        eps=float(config_value(ck, "layer_norm_eps", 1e-12)),
        pooler="pooler.dense.weight" in ck.tensors,
    )


def load_bert(path: str | os.PathLike[str], *, strict: bool = True) -> bert.Bert:
    """A zoo Bert with the weights of the ``save_pretrained`` directory ``path``."""
    from ... import init

    ck = read_hf_dir(path)
    expect_config(ck, ("bert",), "BERT")
    strip_prefix(ck, ("bert.", ""), "embeddings.word_embeddings.weight")
    c = config_from_hf(ck)
    with init.skip_random():  # every weight comes from the checkpoint
        model = bert.Bert(c)
    table = TABLE + (POOLER if c.pooler else [])
    state = convert(ck, table, c.num_layers, model, strict=strict, ignore=IGNORED)
    return load_into(model, state, ck.where)  # type: ignore[return-value]
