"""torchvision checkpoints (a state dict saved with ``safetensors``) -> zoo models: the Vision
Transformers (``vit_b_16`` and friends) and the ResNets (``resnet18`` ... ``resnet152``).

torchvision writes no config, so the architecture is read from the tensor shapes. Its ViT
already stacks q, k, v (``nn.MultiheadAttention``); the head count is not in any shape and comes
from the width (torchvision's B, L and H models: 768 -> 12, 1024 and 1280 -> 16) unless
``num_heads`` is given. The zoo ResNet uses torchvision's names and layouts (``conv1``, ``bn1``,
``layer2.0.downsample.0``, ``fc``, BatchNorm buffers included), so its table is the identity;
the shapes give the block type (a ``conv3`` means Bottleneck), blocks per section, widths, stem
and class count. Grouped or wide variants (ResNeXt, Wide ResNet) do not fit the zoo's blocks and
fail with the tensor that does not fit.
"""

from __future__ import annotations

import math
import os

from lbdl_graph.errors import CheckpointError

from .. import resnet, vit
from ._io import Checkpoint, convert, load_into, read_file, rule

__all__ = ["TORCHVISION_HEADS", "TV_VIT_TABLE", "load_resnet_torchvision",
           "load_vit_torchvision", "resnet_config"]

_T = "encoder.layers.encoder_layer_{i}."
TV_VIT_TABLE = [
    rule("cls_token", "class_token"),
    rule("pos_embed", "encoder.pos_embedding"),
    rule("patch_embed.weight", "conv_proj.weight"),
    rule("patch_embed.bias", "conv_proj.bias"),
    rule("layers.{i}.ln1.weight", f"{_T}ln_1.weight"),
    rule("layers.{i}.ln1.bias", f"{_T}ln_1.bias"),
    rule("layers.{i}.attn.in_proj_weight", f"{_T}self_attention.in_proj_weight"),
    rule("layers.{i}.attn.in_proj_bias", f"{_T}self_attention.in_proj_bias"),
    rule("layers.{i}.attn.out_proj.weight", f"{_T}self_attention.out_proj.weight"),
    rule("layers.{i}.attn.out_proj.bias", f"{_T}self_attention.out_proj.bias"),
    rule("layers.{i}.ln2.weight", f"{_T}ln_2.weight"),
    rule("layers.{i}.ln2.bias", f"{_T}ln_2.bias"),
    rule("layers.{i}.mlp.fc1.weight", f"{_T}mlp.0.weight"),
    rule("layers.{i}.mlp.fc1.bias", f"{_T}mlp.0.bias"),
    rule("layers.{i}.mlp.fc2.weight", f"{_T}mlp.3.weight"),
    rule("layers.{i}.mlp.fc2.bias", f"{_T}mlp.3.bias"),
    rule("norm.weight", "encoder.ln.weight"),
    rule("norm.bias", "encoder.ln.bias"),
]
TV_HEAD = [rule("head.0.weight", "heads.head.weight"), rule("head.0.bias", "heads.head.bias")]
TV_PRE_LOGITS = [rule("head.0.weight", "heads.pre_logits.weight"),
                 rule("head.0.bias", "heads.pre_logits.bias"),
                 rule("head.2.weight", "heads.head.weight"), rule("head.2.bias", "heads.head.bias")]
#: torchvision's ViT widths -> head counts (vit_b_*: 768/12, vit_l_*: 1024/16, vit_h_14: 1280/16)
TORCHVISION_HEADS = {768: 12, 1024: 16, 1280: 16}


def _image_size(ck: Checkpoint, name: str, patch: int) -> int:
    seq = int(ck.tensors[name].shape[1]) - 1
    side = math.isqrt(seq)
    if side * side != seq:
        raise CheckpointError(f"{ck.file_of(name)}: tensor '{name}' has {seq} patch positions, "
                              "not a square grid")
    return side * patch


def _shape(ck: Checkpoint, name: str) -> tuple[int, ...]:
    if name not in ck.tensors:
        raise CheckpointError(f"{ck.where}: missing tensor '{name}'; this does not look like a "
                              "torchvision checkpoint of this architecture")
    return tuple(int(d) for d in ck.tensors[name].shape)


def load_vit_torchvision(path: str | os.PathLike[str], *, num_heads: int | None = None,
                         strict: bool = True) -> vit.ViT:
    """A zoo ViT with the weights of a torchvision ViT state dict (a ``.safetensors`` file)."""
    from ... import init

    ck = read_file(path)
    d = _shape(ck, "class_token")[-1]
    w = _shape(ck, "conv_proj.weight")
    layers = sum(1 for k in ck.tensors if k.startswith("encoder.layers.encoder_layer_")
                 and k.endswith(".ln_1.weight"))
    heads = num_heads if num_heads is not None else TORCHVISION_HEADS.get(d)
    if heads is None:
        raise CheckpointError(f"{ck.where}: width {d} is not one of torchvision's ViTs "
                              f"({sorted(TORCHVISION_HEADS)}); pass num_heads=")
    pre = "heads.pre_logits.weight" in ck.tensors
    c = vit.ViTConfig(
        image_size=_image_size(ck, "encoder.pos_embedding", w[-1]),
        patch_size=w[-1],
        in_channels=w[1],
        num_classes=_shape(ck, "heads.head.weight")[0] if "heads.head.weight" in ck.tensors
        else 0,
        d_model=d,
        num_layers=layers,
        num_heads=heads,
        d_ff=_shape(ck, f"{_T.format(i=0)}mlp.0.weight")[0],
        head_hidden=(_shape(ck, "heads.pre_logits.weight")[0],) if pre else (),
        eps=1e-6,
    )
    with init.skip_random():
        model = vit.ViT(c)
    head = (TV_PRE_LOGITS if pre else TV_HEAD) if c.num_classes else []
    state = convert(ck, [*TV_VIT_TABLE, *head], c.num_layers, model, strict=strict)
    return load_into(model, state, ck.where)  # type: ignore[return-value]


def resnet_config(ck: Checkpoint, stride_on_1x1: bool = False) -> resnet.ResNetConfig:
    """The :class:`ResNetConfig` the tensors of a torchvision ResNet state dict describe."""
    stem = _shape(ck, "conv1.weight")
    bottleneck = "layer1.0.conv3.weight" in ck.tensors
    layers: list[int] = []
    widths: list[int] = []
    while f"layer{len(layers) + 1}.0.conv1.weight" in ck.tensors:
        k = len(layers) + 1
        n = 0
        while f"layer{k}.{n}.conv1.weight" in ck.tensors:
            n += 1
        layers.append(n)
        widths.append(_shape(ck, f"layer{k}.0.conv1.weight")[0])
    if not layers:
        raise CheckpointError(f"{ck.where}: no tensor 'layer1.0.conv1.weight'; this does not "
                              "look like a torchvision ResNet state dict")
    if stem[-1] not in (3, 7):
        raise CheckpointError(f"{ck.file_of('conv1.weight')}: tensor 'conv1.weight' has a "
                              f"{stem[-1]}x{stem[-1]} kernel; the zoo ResNet stems are 7x7 "
                              "(ImageNet) or 3x3 (CIFAR)")
    return resnet.ResNetConfig(
        block="bottleneck" if bottleneck else "basic",
        layers=tuple(layers),
        widths=tuple(widths),
        num_classes=_shape(ck, "fc.weight")[0],
        in_channels=stem[1],
        stem="imagenet" if stem[-1] == 7 else "cifar",
        stem_width=stem[0],
        stride_on_1x1=stride_on_1x1,
    )


def load_resnet_torchvision(path: str | os.PathLike[str], *, stride_on_1x1: bool = False,
                            strict: bool = True) -> resnet.ResNet:
    """A zoo ResNet with the weights of a torchvision ResNet state dict (``.safetensors``)."""
    from ... import init

    ck = read_file(path)
    c = resnet_config(ck, stride_on_1x1)
    with init.skip_random():
        model = resnet.ResNet(c)
    table = [rule(name) for name in model.state_dict()]  # the names are torchvision's
    state = convert(ck, table, 0, model, strict=strict)
    return load_into(model, state, ck.where)  # type: ignore[return-value]
