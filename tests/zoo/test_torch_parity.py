"""The tiny ResNets, GPTs, Transformer and ViT against equivalent PyTorch models given the same
state dict (skipped when torch is not installed). The torch models are written here from the
papers' descriptions with the zoo's parameter names, so ``load_state_dict(strict=True)`` checks
the layout too."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.frontends import manual_seed, trace
from lbdl_graph.frontends.zoo import ZOO, ResNetConfig
from lbdl_graph.frontends.zoo.resnet import ResNet

torch = pytest.importorskip("torch")
nn = torch.nn

# ---- torch references ----


class TBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, w, stride, on_1x1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False),
                                         nn.BatchNorm2d(w))
                           if stride != 1 or cin != w else None)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, w, stride, on_1x1):
        super().__init__()
        out = 4 * w
        s1, s3 = (stride, 1) if on_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(cin, w, 1, s1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, s3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = nn.Conv2d(w, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                         nn.BatchNorm2d(out))
                           if stride != 1 or cin != out else None)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TResNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        block = TBasic if c.block == "basic" else TBottleneck
        if c.stem == "imagenet":
            self.conv1 = nn.Conv2d(c.in_channels, c.stem_width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(c.in_channels, c.stem_width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        cin, self.n = c.stem_width, len(c.layers)
        for i, (n, w) in enumerate(zip(c.layers, c.widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if i and not j else 1, c.stride_on_1x1))
                cin = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, c.num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(self.n):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


class TMLP(nn.Module):
    def __init__(self, d, ff, act):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.act = act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _gelu(kind):
    return nn.GELU(approximate="tanh") if kind == "gelu_tanh" else (
        nn.GELU() if kind == "gelu" else nn.ReLU())


class TBlock(nn.Module):
    def __init__(self, d, h, ff, act, norm_first, eps=1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.mlp = TMLP(d, ff, _gelu(act))

    def sa(self, x, mask, pad):
        return self.attn(x, x, x, attn_mask=mask, key_padding_mask=pad, need_weights=False)[0]

    def forward(self, x, mask=None, pad=None):
        if self.norm_first:
            x = x + self.sa(self.ln1(x), mask, pad)
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.sa(x, mask, pad))
        return self.ln2(x + self.mlp(x))


def causal(t):
    return torch.triu(torch.ones(t, t, dtype=torch.bool), 1)  # True = may not attend


class TGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Module()
        self.pos_emb.weight = nn.Parameter(torch.zeros(c.context, c.d_model))
        self.layers = nn.ModuleList(TBlock(c.d_model, c.num_heads, c.ff, c.activation, True)
                                    for _ in range(c.num_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb.weight[:t]
        for layer in self.layers:
            x = layer(x, causal(t))
        return self.head(self.ln_f(x))


class TDecoderBlock(nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.mlp = TMLP(d, ff, nn.ReLU())

    def forward(self, x, mem, pad):
        t = x.shape[1]
        x = self.ln1(x + self.attn(x, x, x, attn_mask=causal(t), need_weights=False)[0])
        x = self.ln2(x + self.cross_attn(x, mem, mem, key_padding_mask=pad,
                                         need_weights=False)[0])
        return self.ln3(x + self.mlp(x))


def sinusoid(t, d):
    pos = torch.arange(t, dtype=torch.float64)[:, None]
    i = torch.arange(d)
    ang = pos / torch.pow(10_000.0, (i - i % 2) / d)
    return torch.where(i % 2 == 0, torch.sin(ang), torch.cos(ang)).float()


class TTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.src_emb = nn.Embedding(c.src_vocab, c.d_model)
        self.tgt_emb = nn.Embedding(c.tgt_vocab, c.d_model)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(TBlock(c.d_model, c.num_heads, c.d_ff, "relu", False)
                                            for _ in range(c.num_encoder_layers))
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(TDecoderBlock(c.d_model, c.num_heads, c.d_ff)
                                            for _ in range(c.num_decoder_layers))
        self.generator = nn.Linear(c.d_model, c.tgt_vocab, bias=False)
        self.generator.weight = self.tgt_emb.weight

    def forward(self, src, tgt):
        d = self.c.d_model
        pad = src == self.c.pad_id
        x = self.src_emb(src) * math.sqrt(d) + sinusoid(src.shape[1], d)
        for layer in self.encoder.layers:
            x = layer(x, None, pad)
        y = self.tgt_emb(tgt) * math.sqrt(d) + sinusoid(tgt.shape[1], d)
        for layer in self.decoder.layers:
            y = layer(y, x, pad)
        return self.generator(y)


class TViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.patch_embed = nn.Conv2d(c.in_channels, c.d_model, c.patch_size, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.d_model))
        self.layers = nn.ModuleList(TBlock(c.d_model, c.num_heads, c.d_ff, "gelu", True, c.eps)
                                    for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.eps)
        sizes = (c.d_model, *c.head_hidden, c.num_classes)
        mods = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            mods.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                mods.append(nn.Tanh())
        self.head = nn.Sequential(*mods)

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        for layer in self.layers:
            t = layer(t)
        return self.head(self.norm(t)[:, 0])


# ---- comparisons ----


def _load(tmodel, model, randomize_bn: bool = False):
    if randomize_bn:  # non-trivial running statistics and affine parameters
        rng = np.random.default_rng(7)
        for name, arr in model.state_dict().items():
            if arr.dtype != np.float32 or not ("bn" in name or "downsample.1" in name):
                continue
            if name.endswith(("running_var", "weight")):
                arr[...] = rng.uniform(0.5, 1.5, arr.shape)
            else:
                arr[...] = rng.normal(0.0, 0.3, arr.shape)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    tmodel.load_state_dict(sd, strict=True)
    return tmodel.eval()


def _compare(graph, feeds, tmodel, targs, rtol=1e-4, atol=1e-5):
    ours = run(graph, feeds)["output"]
    with torch.no_grad():
        ref = tmodel(*targs).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("config", [
    ZOO["resnet_tiny"].config,
    ZOO["resnet_tiny_bottleneck"].config,
    ResNetConfig(block="bottleneck", layers=(1, 2), widths=(4, 8), num_classes=5,
                 stem="imagenet", stem_width=8, stride_on_1x1=True),
], ids=["basic", "bottleneck", "imagenet_stem_v1"])
def test_resnet_matches_torch(config):
    manual_seed(1)
    model = ResNet(config).eval()
    tmodel = _load(TResNet(config), model, randomize_bn=True)
    size = 32 if config.stem == "imagenet" else 16
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    g = trace(model, [("N", 3, size, size)])
    _compare(g, {"x": x}, tmodel, [torch.from_numpy(x)])


@pytest.mark.parametrize("name", ["gpt_tiny", "gpt_mini"])
def test_gpt_matches_torch(name):
    manual_seed(2)
    entry = ZOO[name]
    model = entry.model()
    tmodel = _load(TGPT(entry.config), model)
    idx = entry.example_inputs({"N": 2, "T": 9}, seed=4)["idx"]
    _compare(entry.trace(model), {"idx": idx}, tmodel, [torch.from_numpy(idx)])


def test_transformer_matches_torch():
    manual_seed(3)
    entry = ZOO["transformer_tiny"]
    model = entry.model()
    tmodel = _load(TTransformer(entry.config), model)
    feeds = entry.example_inputs({"N": 2, "S": 7, "T": 5}, seed=5)
    feeds["src"][:, -2:] = 0  # trailing padding
    _compare(entry.trace(model), feeds, tmodel,
             [torch.from_numpy(feeds["src"]), torch.from_numpy(feeds["tgt"])])


def test_vit_matches_torch():
    manual_seed(4)
    entry = ZOO["vit_tiny"]
    model = entry.model()
    model.cls_token.data[...] = np.random.default_rng(1).normal(0, 0.5, (1, 1, 32))
    tmodel = _load(TViT(entry.config), model)
    x = entry.example_inputs({"N": 3}, seed=6)["x"]
    _compare(entry.trace(model), {"x": x}, tmodel, [torch.from_numpy(x)])
