"""Vision checkpoints -> zoo models with no glue: transformers ViT directories, torchvision ViT
and ResNet state dicts saved with safetensors; logits against the torch model on the same input.

torchvision itself is optional (it does not install beside every torch): the torchvision layout
is also built here by torch modules written after torchvision's source, with its exact names
(``conv_proj``, ``encoder.layers.encoder_layer_0.self_attention``, ``mlp.0``/``mlp.3``,
``heads.head``; ResNet's ``layer2.0.downsample.0``), so the loaders are always tested; the real
torchvision models are checked as well when it imports."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lbdl_graph.backends.numpy import run
from lbdl_graph.errors import CheckpointError
from lbdl_graph.frontends import trace
from lbdl_graph.frontends.zoo import ResNet, ResNetConfig, ViT

torch = pytest.importorskip("torch")
nn = torch.nn
safetensors_torch = pytest.importorskip("safetensors.torch")


def perturb(model: Any, seed: int = 1) -> Any:
    """Random weights everywhere, BatchNorm statistics included; evaluation mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.dtype.is_floating_point:
                scale = 0.02 if t.ndim >= 2 else 0.1  # logits of order 1 at any width
                noise = scale * torch.randn(t.shape, generator=g)
                t.copy_(t.abs() + 0.5 + noise.abs() if t.ndim == 1 and (t == 1).all() else
                        t + noise)
    return model.eval()


def save_state(model: Any, path: Path) -> Path:
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(path))
    return path


def ours(model: Any, x: np.ndarray) -> np.ndarray:
    g = trace(model, [("N", *x.shape[1:])], training=False)
    return run(g, {g.inputs[0].name: x})["output"]


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


# ---- torchvision's layouts, after torchvision/models/vision_transformer.py and resnet.py ----


class TVEncoderBlock(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(0.0), nn.Linear(ff, d),
                                 nn.Dropout(0.0))

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.ln_1(x)
        h, _ = self.self_attention(h, h, h, need_weights=False)
        x = x + h
        return x + self.mlp(self.ln_2(x))


class TVEncoder(nn.Module):
    def __init__(self, seq: int, layers: int, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, d).normal_(std=0.02))
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", TVEncoderBlock(d, heads, ff)) for i in range(layers)))
        self.ln = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.ln(self.layers(x + self.pos_embedding))


class TVViT(nn.Module):
    def __init__(self, image: int, patch: int, layers: int, heads: int, d: int, ff: int,
                 classes: int, representation: int | None = None) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, d, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = TVEncoder((image // patch) ** 2 + 1, layers, d, heads, ff)
        heads_: OrderedDict[str, nn.Module] = OrderedDict()
        if representation is None:
            heads_["head"] = nn.Linear(d, classes)
        else:
            heads_["pre_logits"] = nn.Linear(d, representation)
            heads_["act"] = nn.Tanh()
            heads_["head"] = nn.Linear(representation, classes)
        self.heads = nn.Sequential(heads_)

    def forward(self, x):  # type: ignore[no-untyped-def]
        n, d = x.shape[0], self.class_token.shape[-1]
        x = self.conv_proj(x).reshape(n, d, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


@pytest.mark.parametrize("representation", [None, 24])
def test_torchvision_vit_layout(tmp_path: Path, representation: int | None) -> None:
    torch.manual_seed(0)
    tv = perturb(TVViT(32, 8, 2, 12, 768 // 8, 64, 7, representation))  # width 96, 12 heads
    with pytest.raises(CheckpointError, match="width 96 is not one of torchvision's ViTs"):
        ViT.from_torchvision(save_state(tv, tmp_path / "vit.safetensors"))
    model = ViT.from_torchvision(tmp_path / "vit.safetensors", num_heads=12)
    c = model.config
    assert (c.image_size, c.patch_size, c.d_model, c.num_layers, c.d_ff, c.num_classes) == (
        32, 8, 96, 2, 64, 7)
    assert c.head_hidden == (() if representation is None else (24,))
    x = images(2, 32)
    with torch.no_grad():
        ref = tv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(model, x), ref, rtol=0, atol=1e-5)


def test_torchvision_vit_b_width_gives_its_head_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = perturb(TVViT(32, 16, 1, 12, 768, 96, 3))
    model = ViT.from_torchvision(save_state(tv, tmp_path / "vit_b.safetensors"))
    assert model.config.num_heads == 12
    x = images(1, 32, seed=2)
    with torch.no_grad():
        ref = tv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(model, x), ref, rtol=0, atol=1e-5)


def test_torchvision_resnet_layout(tmp_path: Path) -> None:
    from .test_torch_parity import TResNet  # torchvision's names, checked strictly there

    config = ResNetConfig(block="basic", layers=(2, 1, 1), widths=(8, 16, 24), num_classes=6,
                          stem="imagenet", stem_width=8)
    torch.manual_seed(0)
    tv = perturb(TResNet(config))
    keys = set(tv.state_dict())
    assert {"bn1.num_batches_tracked", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var", "fc.bias"} <= keys  # torchvision's names
    model = ResNet.from_torchvision(save_state(tv, tmp_path / "resnet.safetensors"))
    assert model.config == config
    x = images(2, 32, seed=3)
    with torch.no_grad():
        ref = tv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(model, x), ref, rtol=0, atol=1e-5)


def test_torchvision_bottleneck_resnet(tmp_path: Path) -> None:
    from .test_torch_parity import TResNet

    config = ResNetConfig(block="bottleneck", layers=(1, 2), widths=(4, 8), num_classes=5,
                          stem="imagenet", stem_width=8)
    torch.manual_seed(0)
    tv = perturb(TResNet(config))
    model = ResNet.from_torchvision(save_state(tv, tmp_path / "r.safetensors"))
    assert model.config == config
    x = images(2, 32, seed=4)
    with torch.no_grad():
        ref = tv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(model, x), ref, rtol=0, atol=1e-5)


def test_bad_torchvision_files_name_file_and_tensor(tmp_path: Path) -> None:
    from .test_torch_parity import TResNet

    with pytest.raises(CheckpointError, match="does not exist"):
        ResNet.from_torchvision(tmp_path / "missing.safetensors")
    vit_file = save_state(TVViT(32, 16, 1, 12, 768, 96, 3), tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor 'conv1\.weight'.*torchvision"):
        ResNet.from_torchvision(vit_file)
    config = ResNetConfig(block="basic", layers=(1, 1), widths=(8, 16), num_classes=4,
                          stem="imagenet", stem_width=8)
    sd = {k: v.contiguous() for k, v in TResNet(config).state_dict().items()}
    sd["layer2.0.conv2.weight"] = torch.zeros(16, 12, 3, 3)  # a grouped/odd conv
    safetensors_torch.save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: tensor 'layer2\.0\.conv2"
                                              r"\.weight' \[16, 12, 3, 3\]"):
        ResNet.from_torchvision(tmp_path / "bad.safetensors")
    sd = {k: v.contiguous() for k, v in TResNet(config).state_dict().items()}
    sd["extra.weight"] = torch.zeros(2)
    safetensors_torch.save_file(sd, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"\['extra\.weight'\].*no place in ResNet"):
        ResNet.from_torchvision(tmp_path / "extra.safetensors")


# ---- transformers ViT ----


@pytest.mark.parametrize("arch,kw", [("ViTModel", {}), ("ViTForImageClassification",
                                                        {"num_labels": 5}),
                                     ("ViTModel", {"qkv_bias": False})])
def test_hf_vit_matches_transformers(tmp_path: Path, arch: str, kw: dict[str, Any]) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, **kw)
    torch.manual_seed(0)
    hf = perturb(getattr(transformers, arch)(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.save_pretrained(tmp_path / "vit")
    model = ViT.from_hf(tmp_path / "vit")
    assert model.config.num_classes == kw.get("num_labels", 0)
    x = images(2, 32, seed=5)
    with torch.no_grad():
        r = hf(torch.from_numpy(x))
    ref = r.logits if arch != "ViTModel" else r.last_hidden_state[:, 0]
    np.testing.assert_allclose(ours(model, x), ref.numpy(), rtol=0, atol=1e-5)


# ---- the real torchvision models, when torchvision imports ----


def _torchvision() -> Any:
    try:
        import torchvision
    except Exception as e:  # a broken install raises RuntimeError, not ImportError
        pytest.skip(f"torchvision does not import: {type(e).__name__}: {e}")
    return torchvision


def test_real_torchvision_resnet18_and_small_vit(tmp_path: Path) -> None:
    tvm = _torchvision().models
    torch.manual_seed(0)
    r18 = perturb(tvm.resnet18(weights=None, num_classes=10))
    model = ResNet.from_torchvision(save_state(r18, tmp_path / "r18.safetensors"))
    x = images(1, 64, seed=6)
    with torch.no_grad():
        ref = r18(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(model, x), ref, rtol=0, atol=1e-5)
    v = perturb(tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                      hidden_dim=32, mlp_dim=64, num_classes=10))
    vit = ViT.from_torchvision(save_state(v, tmp_path / "vit.safetensors"), num_heads=4)
    x = images(2, 32, seed=7)
    with torch.no_grad():
        ref = v(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(vit, x), ref, rtol=0, atol=1e-5)
