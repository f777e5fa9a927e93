"""GPT-2 (transformers ``GPT2LMHeadModel`` / ``GPT2Model``) -> the zoo's :class:`GPT`.

GPT-2 writes its projections as ``Conv1D`` (weight (in, out), ``y = x @ W + b``), so every
projection is transposed into the zoo's Linear layout (out, in), and the fused ``c_attn``
(q, k, v stacked along the output axis) becomes ``attn.in_proj_weight`` (3D, D) as it is, rows
q, k, v. The head is tied to ``wte`` (``tie_word_embeddings``) or read from ``lm_head.weight``.
"""

from __future__ import annotations

import os

import numpy as np

from lbdl_graph.errors import CheckpointError

from .. import gpt
from ._io import (
    Checkpoint,
    config_value,
    convert,
    expect_config,
    load_into,
    read_hf_dir,
    rule,
    strip_prefix,
    transpose,
)

__all__ = ["ACTIVATIONS", "TABLE", "config_from_hf", "load_gpt2"]

#: transformers' ``activation_function`` -> the zoo's activation name.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
               "relu": "relu", "silu": "silu", "swish": "silu", "tanh": "tanh"}

TABLE = [
    rule("tok_emb.weight", "wte.weight"),
    rule("pos_emb.weight", "wpe.weight"),
    rule("layers.{i}.ln1.weight", "h.{i}.ln_1.weight"),
    rule("layers.{i}.ln1.bias", "h.{i}.ln_1.bias"),
    rule("layers.{i}.attn.in_proj_weight", "h.{i}.attn.c_attn.weight", how=transpose),
    rule("layers.{i}.attn.in_proj_bias", "h.{i}.attn.c_attn.bias"),
    rule("layers.{i}.attn.out_proj.weight", "h.{i}.attn.c_proj.weight", how=transpose),
    rule("layers.{i}.attn.out_proj.bias", "h.{i}.attn.c_proj.bias"),
    rule("layers.{i}.ln2.weight", "h.{i}.ln_2.weight"),
    rule("layers.{i}.ln2.bias", "h.{i}.ln_2.bias"),
    rule("layers.{i}.mlp.fc1.weight", "h.{i}.mlp.c_fc.weight", how=transpose),
    rule("layers.{i}.mlp.fc1.bias", "h.{i}.mlp.c_fc.bias"),
    rule("layers.{i}.mlp.fc2.weight", "h.{i}.mlp.c_proj.weight", how=transpose),
    rule("layers.{i}.mlp.fc2.bias", "h.{i}.mlp.c_proj.bias"),
    rule("ln_f.weight", "ln_f.weight"),
    rule("ln_f.bias", "ln_f.bias"),
]
UNTIED_HEAD = rule("head.weight", "lm_head.weight")
#: buffers older transformers versions saved (the causal mask); never weights
IGNORED = (".attn.bias", ".attn.masked_bias")


def config_from_hf(ck: Checkpoint) -> gpt.GPTConfig:
    """The :class:`GPTConfig` of a GPT-2 ``config.json`` (dropout 0: loaded for inference)."""
    expect_config(ck, ("gpt2",), "GPT-2")
    act = config_value(ck, "activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{ck.where}/config.json: activation_function {act!r} is not "
                              f"one of {sorted(ACTIVATIONS)}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                 "add_cross_attention"):
        if ck.config.get(flag):
            raise CheckpointError(f"{ck.where}/config.json: {flag}=true is not supported by "
                                  "the zoo GPT")
    if ck.config.get("scale_attn_weights", True) is not True:
        raise CheckpointError(f"{ck.where}/config.json: scale_attn_weights=false is not "
                              "supported by the zoo GPT")
    archs = ck.config.get("architectures") or ["GPT2LMHeadModel"]
    head = "lm_head.weight" in ck.tensors or archs[0] != "GPT2Model"
    return gpt.GPTConfig(
        vocab_size=int(config_value(ck, "vocab_size")),
        context=int(config_value(ck, "n_positions")),
        num_layers=int(config_value(ck, "n_layer")),
        d_model=int(config_value(ck, "n_embd")),
        num_heads=int(config_value(ck, "n_head")),
        d_ff=ck.config.get("n_inner"),
        dropout=0.0,
        activation=ACTIVATIONS[act],
        tie_weights=bool(ck.config.get("tie_word_embeddings", True)),
        head=head,
        init_std=0.02,
        eps=float(config_value(ck, "layer_norm_epsilon", 1e-5)),
    )


def load_gpt2(path: str | os.PathLike[str], *, strict: bool = True) -> gpt.GPT:
    """A zoo GPT with the weights of the ``save_pretrained`` directory ``path``."""
    from ... import init

    ck = read_hf_dir(path)
    c = config_from_hf(ck)
    strip_prefix(ck, ("transformer.", ""), "wte.weight")
    with init.skip_random():  # every weight comes from the checkpoint
        model = gpt.GPT(c)
    table = list(TABLE)
    if c.head and not c.tie_weights:
        table.append(UNTIED_HEAD)
    elif c.head and "lm_head.weight" in ck.tensors:  # a tied head written out as well
        if not np.array_equal(ck.tensors["lm_head.weight"], ck.tensors["wte.weight"]):
            raise CheckpointError(f"{ck.file_of('lm_head.weight')}: tensor 'lm_head.weight' "
                                  "differs from 'wte.weight' but config.json says "
                                  "tie_word_embeddings=true")
        del ck.tensors["lm_head.weight"]
    state = convert(ck, table, c.num_layers, model, strict=strict, ignore=IGNORED)
    return load_into(model, state, ck.where)  # type: ignore[return-value]
