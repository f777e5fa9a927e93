"""torchvision's classic CNN checkpoints (a state dict saved with ``safetensors``) -> zoo
models: ``alexnet``, ``vgg11`` ... ``vgg19_bn`` and ``googlenet``.

The zoo models use torchvision's names and layouts (``features.3``, ``classifier.6``,
``inception4a.branch2.1.conv``, ``aux1.fc1``, BatchNorm buffers included), so each table is the
identity; only the config is read from the tensor shapes. A VGG's max poolings own no tensor:
they are the gaps in the ``features.N`` numbering, and the last one (after the last
convolution, where every torchvision VGG has one) is assumed. A GoogLeNet file with ``aux1``
and ``aux2`` tensors gives a model with the auxiliary heads.
"""

from __future__ import annotations

import math
import os

from lbdl_graph.errors import CheckpointError

from ...module import Module
from .. import alexnet, googlenet, vgg
from ._io import Checkpoint, convert, load_into, read_file, rule
from .torchvision import _shape

__all__ = ["alexnet_config", "googlenet_config", "load_alexnet_torchvision",
           "load_googlenet_torchvision", "load_vgg_torchvision", "vgg_config"]


def _pool_size(ck: Checkpoint, name: str, channels: int) -> int:
    """The adaptive pooling side that makes ``name``'s input width ``channels * side**2``."""
    flat = _shape(ck, name)[1]
    side = math.isqrt(flat // channels) if channels else 0
    if side < 1 or channels * side * side != flat:
        raise CheckpointError(f"{ck.file_of(name)}: tensor '{name}' takes {flat} features, "
                              f"not {channels} channels times a square pooled map")
    return side


def _load(ck: Checkpoint, model: Module, strict: bool) -> Module:
    """Every tensor under its own name (the zoo model's names are torchvision's)."""
    table = [rule(name) for name in model.state_dict()]
    return load_into(model, convert(ck, table, 0, model, strict=strict), ck.where)


def alexnet_config(ck: Checkpoint) -> alexnet.AlexNetConfig:
    """The :class:`AlexNetConfig` the tensors of a torchvision AlexNet state dict describe."""
    w = [_shape(ck, f"features.{i}.weight") for i in (0, 3, 6, 8, 10)]
    widths = (w[0][0], w[1][0], w[2][0], w[3][0], w[4][0])
    return alexnet.AlexNetConfig(
        widths=widths,
        hidden=_shape(ck, "classifier.1.weight")[0],
        pool_size=_pool_size(ck, "classifier.1.weight", widths[-1]),
        num_classes=_shape(ck, "classifier.6.weight")[0],
        in_channels=w[0][1],
    )


def load_alexnet_torchvision(path: str | os.PathLike[str], *, strict: bool = True
                             ) -> alexnet.AlexNet:
    """A zoo AlexNet with the weights of a torchvision AlexNet state dict."""
    from ... import init

    ck = read_file(path)
    with init.skip_random():
        model = alexnet.AlexNet(alexnet_config(ck))
    return _load(ck, model, strict)  # type: ignore[return-value]


def vgg_config(ck: Checkpoint) -> vgg.VGGConfig:
    """The :class:`VGGConfig` the tensors of a torchvision VGG state dict describe."""
    convs = sorted(int(k.split(".")[1]) for k, t in ck.tensors.items()
                   if k.startswith("features.") and k.endswith(".weight") and t.ndim == 4)
    if not convs:
        raise CheckpointError(f"{ck.where}: no 4-D tensor 'features.N.weight'; this does not "
                              "look like a torchvision VGG state dict")
    bn = f"features.{convs[0] + 1}.running_mean" in ck.tensors
    layers: list[int | str] = []
    at, cin = 0, None
    for i in convs:
        if i < at:
            raise CheckpointError(f"{ck.file_of(f'features.{i}.weight')}: convolution "
                                  f"'features.{i}' follows the previous one too closely for a "
                                  f"VGG{' with BatchNorm' if bn else ''}")
        layers += ["M"] * (i - at)
        shape = _shape(ck, f"features.{i}.weight")
        if cin is None:
            cin = shape[1]
        layers.append(shape[0])
        at = i + (3 if bn else 2)  # conv, [BatchNorm,] ReLU
    layers.append("M")
    width = int(layers[-2])
    return vgg.VGGConfig(
        layers=tuple(layers),
        batch_norm=bn,
        hidden=_shape(ck, "classifier.0.weight")[0],
        pool_size=_pool_size(ck, "classifier.0.weight", width),
        num_classes=_shape(ck, "classifier.6.weight")[0],
        in_channels=int(cin or 0),
    )


def load_vgg_torchvision(path: str | os.PathLike[str], *, strict: bool = True) -> vgg.VGG:
    """A zoo VGG with the weights of a torchvision VGG state dict (with or without
    BatchNorm)."""
    from ... import init

    ck = read_file(path)
    with init.skip_random():
        model = vgg.VGG(vgg_config(ck))
    return _load(ck, model, strict)  # type: ignore[return-value]


def googlenet_config(ck: Checkpoint, transform_input: bool = False
                     ) -> googlenet.GoogLeNetConfig:
    """The :class:`GoogLeNetConfig` the tensors of a torchvision GoogLeNet state dict
    describe."""
    def out(name: str) -> int:
        return _shape(ck, f"{name}.conv.weight")[0]

    stem = _shape(ck, "conv1.conv.weight")
    blocks = []
    for n in googlenet.NAMES:
        p = f"inception{n}."
        blocks.append((out(p + "branch1"), out(p + "branch2.0"), out(p + "branch2.1"),
                       out(p + "branch3.0"), out(p + "branch3.1"), out(p + "branch4.1")))
    aux = "aux1.conv.conv.weight" in ck.tensors
    default = googlenet.GoogLeNetConfig()
    return googlenet.GoogLeNetConfig(
        stem=(stem[0], out("conv2"), out("conv3")),
        blocks=tuple(blocks),
        aux_channels=out("aux1.conv") if aux else default.aux_channels,
        aux_hidden=_shape(ck, "aux1.fc1.weight")[0] if aux else default.aux_hidden,
        num_classes=_shape(ck, "fc.weight")[0],
        in_channels=stem[1],
        aux_logits=aux,
        transform_input=transform_input,
    )


def load_googlenet_torchvision(path: str | os.PathLike[str], *, transform_input: bool = False,
                               strict: bool = True) -> googlenet.GoogLeNet:
    """A zoo GoogLeNet with the weights of a torchvision GoogLeNet state dict (auxiliary
    heads included when the file has them)."""
    from ... import init

    ck = read_file(path)
    with init.skip_random():
        model = googlenet.GoogLeNet(googlenet_config(ck, transform_input))
    return _load(ck, model, strict)  # type: ignore[return-value]
