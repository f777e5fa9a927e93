"""torch.nn twins of zoo models (same parameter names, so our state_dict loads strictly) and
PyTorch's own ONNX export, for the benchmarks' comparisons. Import only when torch is present."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn as tnn

__all__ = ["TWINS", "torch_onnx", "twin"]


def _mlp_stack(sizes: tuple[int, ...]) -> tnn.Sequential:
    layers: list[tnn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(tnn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(tnn.ReLU())
    return tnn.Sequential(*layers)


class MLP(tnn.Module):
    """The zoo's ``mlp``: Linear/ReLU layers on the flattened input."""

    def __init__(self, c: Any) -> None:
        super().__init__()
        self.layers = _mlp_stack(tuple(c.sizes))

    def forward(self, x: Any) -> Any:
        return self.layers(x.flatten(1))


class LeNet(tnn.Module):
    """The zoo's ``lenet``: conv -> max pool -> relu stages, then an MLP."""

    def __init__(self, c: Any) -> None:
        super().__init__()
        stages: list[tnn.Module] = []
        width = c.in_channels
        for ch, p in zip(c.channels, c.pools, strict=True):
            stages += [tnn.Conv2d(width, ch, c.kernel_size, padding=c.conv_padding),
                       tnn.MaxPool2d(p), tnn.ReLU()]
            width = ch
        self.features = tnn.Sequential(*stages)
        self.classifier = _mlp_stack((c.flat_features(), *c.hidden, c.num_classes))

    def forward(self, x: Any) -> Any:
        return self.classifier(self.features(x).flatten(1))


def _conv_bn(cin: int, cout: int, k: int, stride: int) -> tuple[tnn.Module, tnn.Module]:
    return tnn.Conv2d(cin, cout, k, stride, k // 2, bias=False), tnn.BatchNorm2d(cout)


class BasicBlock(tnn.Module):
    """ResNet's basic block with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, w: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, w, 3, stride)
        self.conv2, self.bn2 = _conv_bn(w, w, 3, 1)
        self.downsample = (tnn.Sequential(*_conv_bn(cin, w, 1, stride))
                           if stride != 1 or cin != w else None)

    def forward(self, x: Any) -> Any:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(tnn.Module):
    """The zoo's ``resnet_tiny``: CIFAR stem and basic blocks."""

    def __init__(self, c: Any) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c.in_channels, c.stem_width, 3, 1)
        cin, self.n = c.stem_width, len(c.layers)
        for i, (n, w) in enumerate(zip(c.layers, c.widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
            setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(cin, c.num_classes)

    def forward(self, x: Any) -> Any:
        x = torch.relu(self.bn1(self.conv1(x)))
        for i in range(self.n):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


class Attention(tnn.Module):
    """Causal multi-head self-attention with MultiheadAttention's parameter names."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = tnn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = tnn.Parameter(torch.empty(3 * d))
        self.out_proj = tnn.Linear(d, d)

    def forward(self, x: Any) -> Any:
        n, t, d = x.shape
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in TF.linear(x, self.in_proj_weight, self.in_proj_bias).split(d, -1))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(n, t, d))


class GPTBlock(tnn.Module):
    """A pre-LayerNorm transformer block."""

    def __init__(self, c: Any) -> None:
        super().__init__()
        self.ln1 = tnn.LayerNorm(c.d_model, eps=c.eps)
        self.attn = Attention(c.d_model, c.num_heads)
        self.ln2 = tnn.LayerNorm(c.d_model, eps=c.eps)
        self.mlp = tnn.Module()
        self.mlp.fc1, self.mlp.fc2 = tnn.Linear(c.d_model, c.ff), tnn.Linear(c.ff, c.d_model)
        self.act = tnn.GELU(approximate="tanh" if c.activation == "gelu_tanh" else "none")

    def forward(self, x: Any) -> Any:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp.fc2(self.act(self.mlp.fc1(self.ln2(x))))


class GPT(tnn.Module):
    """The zoo's GPT: token + learned positions, blocks, final LayerNorm, (tied) head."""

    def __init__(self, c: Any) -> None:
        super().__init__()
        self.tok_emb = tnn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = tnn.Module()
        self.pos_emb.weight = tnn.Parameter(torch.empty(c.context, c.d_model))
        self.layers = tnn.ModuleList(GPTBlock(c) for _ in range(c.num_layers))
        self.ln_f = tnn.LayerNorm(c.d_model, eps=c.eps)
        self.head = tnn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight

    def forward(self, idx: Any) -> Any:
        x = self.tok_emb(idx) + self.pos_emb.weight[: idx.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln_f(x))


TWINS: dict[str, Callable[[Any], tnn.Module]] = {
    "mlp": MLP, "lenet": LeNet, "resnet_tiny": ResNet, "gpt_mini": GPT}


def twin(name: str, config: Any, state: Mapping[str, np.ndarray]) -> tnn.Module:
    """The torch twin of zoo model ``name`` carrying ``state`` (loaded strictly)."""
    model = TWINS[name](config)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                          strict=True)
    return model


def torch_onnx(model: Any, input_name: str, example: np.ndarray,
               axes: Mapping[int, str] | None = None) -> Any:
    """``model`` exported by torch.onnx.export (TorchScript exporter, opset 17) with the given
    dynamic axes (default: the batch dim)."""
    import onnx

    axes = dict(axes or {0: "N"})
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, not gone
        torch.onnx.export(model, (torch.from_numpy(example),), buf, input_names=[input_name],
                          output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={input_name: axes, "output": axes})
    return onnx.load_from_string(buf.getvalue())
