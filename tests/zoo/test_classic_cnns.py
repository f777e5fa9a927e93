"""The classic CNNs (AlexNet, VGG, GoogLeNet): parameter counts and names equal to torchvision's,
torchvision state dicts (saved with safetensors) loading as is, logits equal to torch's.

torchvision does not install beside every torch, so its three models are written here after
torchvision/models/alexnet.py, vgg.py and googlenet.py with its exact module names; the real
torchvision models are checked too when it imports. Full-size models are built on torch's meta
device and, on our side, without drawing weights, so the counts cost no time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lbdl_graph.errors import CheckpointError, OpError
from lbdl_graph.frontends import init, trace
from lbdl_graph.frontends.zoo import (
    VGG,
    ZOO,
    AlexNet,
    AlexNetConfig,
    GoogLeNet,
    GoogLeNetConfig,
    VGGConfig,
)
from lbdl_graph.frontends.zoo.alexnet import alexnet_parameters
from lbdl_graph.frontends.zoo.vgg import VGG11, VGG16, vgg_parameters

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors.torch")
nn = torch.nn
F = torch.nn.functional

from .test_checkpoints_vision import images, ours, perturb, save_state  # noqa: E402

# ---- torchvision's layouts ----


class TVAlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, widths: tuple[int, ...] = (64, 192, 384, 256, 256),
                 hidden: int = 4096, pool: int = 6) -> None:
        super().__init__()
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, a, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(a, b, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(b, c, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, d, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(d, e, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(e * pool * pool, hidden), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TVVGG(nn.Module):
    def __init__(self, cfg: tuple[Any, ...] = VGG16, batch_norm: bool = False,
                 num_classes: int = 1000, hidden: int = 4096, pool: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                conv = nn.Conv2d(cin, v, kernel_size=3, padding=1)
                layers += [conv, nn.BatchNorm2d(v), nn.ReLU(True)] if batch_norm else \
                    [conv, nn.ReLU(True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool * pool, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(hidden, num_classes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return F.relu(self.bn(self.conv(x)), inplace=True)


class TVInception(nn.Module):
    def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, r3, kernel_size=1),
                                     BasicConv2d(r3, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, r5, kernel_size=1),
                                     BasicConv2d(r5, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1,
                                                  ceil_mode=True),
                                     BasicConv2d(cin, pool, kernel_size=1))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TVInceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int, ch: int, hidden: int, p: float) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, ch, kernel_size=1)
        self.fc1 = nn.Linear(ch * 16, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(p=p)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class TVGoogLeNet(nn.Module):
    def __init__(self, c: GoogLeNetConfig) -> None:
        super().__init__()
        self.transform_input = c.transform_input
        self.conv1 = BasicConv2d(3, c.stem[0], kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(c.stem[0], c.stem[1], kernel_size=1)
        self.conv3 = BasicConv2d(c.stem[1], c.stem[2], kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        widths = [c.stem[2]]
        for name, b in zip(("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"), c.blocks,
                           strict=True):
            setattr(self, f"inception{name}", TVInception(widths[-1], *b))
            widths.append(b[0] + b[2] + b[4] + b[5])
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.aux1 = self.aux2 = None
        if c.aux_logits:
            self.aux1 = TVInceptionAux(widths[3], c.num_classes, c.aux_channels, c.aux_hidden,
                                       c.dropout_aux)
            self.aux2 = TVInceptionAux(widths[6], c.num_classes, c.aux_channels, c.aux_hidden,
                                       c.dropout_aux)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=c.dropout)
        self.fc = nn.Linear(widths[-1], c.num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        if self.transform_input:
            x = torch.cat([torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                           torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                           torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(x))))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (x, aux2, aux1) if aux1 is not None else x


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))


# ---- full-size counts and names ----


def shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in v.shape) for k, v in state.items()}


@pytest.mark.parametrize("name,twin,count", [
    ("alexnet", lambda: TVAlexNet(), 61_100_840),
    ("vgg16", lambda: TVVGG(), 138_357_544),
    ("googlenet", lambda: TVGoogLeNet(GoogLeNetConfig()), 6_624_904),
])
def test_full_size_counts_and_state_dict_equal_torchvision(name: str, twin: Any,
                                                           count: int) -> None:
    with torch.device("meta"):
        tv = twin()
    assert sum(p.numel() for p in tv.parameters()) == count
    with init.skip_random():  # zero weights: no time spent drawing 138M numbers
        model = ZOO[name].model()
    assert model.num_parameters() == count
    assert shapes(model.state_dict()) == shapes(tv.state_dict())  # names, order-free
    g = ZOO[name].trace(model)
    assert [tuple(v.type.shape) for v in g.outputs] == [("N", 1000)]
    assert alexnet_parameters(AlexNetConfig()) == 61_100_840
    assert vgg_parameters(VGGConfig()) == 138_357_544


def test_googlenet_aux_heads_and_vgg_variants_match_torchvision_counts() -> None:
    with torch.device("meta"):
        tv = TVGoogLeNet(GoogLeNetConfig(aux_logits=True))
        bn = TVVGG(VGG16, batch_norm=True)
        v11 = TVVGG(VGG11)
    with init.skip_random():
        ours_ = GoogLeNet(GoogLeNetConfig(aux_logits=True))
        assert shapes(ours_.state_dict()) == shapes(tv.state_dict())
        assert {"aux1.conv.conv.weight", "aux1.fc1.weight", "aux2.fc2.bias"} <= set(
            ours_.state_dict())
        assert ours_.num_parameters() == sum(p.numel() for p in tv.parameters()) == 13_004_888
        assert shapes(VGG(VGGConfig(batch_norm=True)).state_dict()) == shapes(bn.state_dict())
    assert vgg_parameters(VGGConfig(batch_norm=True)) == 138_365_992  # vgg16_bn
    assert vgg_parameters(VGGConfig(layers=VGG11)) == sum(p.numel() for p in v11.parameters())


# ---- state dicts load as is; logits equal torch's ----


@pytest.mark.parametrize("size,pool", [(64, 6), (100, 6), (64, 2)])
def test_alexnet_loads_torchvision_state_dict(tmp_path: Path, size: int, pool: int) -> None:
    torch.manual_seed(0)
    tv = perturb(TVAlexNet(7, (8, 12, 16, 12, 10), 24, pool))
    model = AlexNet.from_torchvision(save_state(tv, tmp_path / "alexnet.safetensors"))
    assert model.config == AlexNetConfig(widths=(8, 12, 16, 12, 10), hidden=24, pool_size=pool,
                                         num_classes=7)
    x = images(2, size, seed=size)
    close(ours(model, x), torch_logits(tv, x))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_loads_torchvision_state_dict(tmp_path: Path, batch_norm: bool) -> None:
    cfg = tuple(v if v == "M" else v // 16 for v in VGG16)  # VGG-16's shape at 1/16 width
    torch.manual_seed(0)
    tv = perturb(TVVGG(cfg, batch_norm, num_classes=5, hidden=32))
    model = VGG.from_torchvision(save_state(tv, tmp_path / "vgg.safetensors"))
    assert model.config == VGGConfig(layers=cfg, batch_norm=batch_norm, hidden=32,
                                     num_classes=5)
    x = images(2, 32, seed=1)
    close(ours(model, x), torch_logits(tv, x))


@pytest.mark.parametrize("aux,transform,size", [(False, False, 32), (True, True, 64)])
def test_googlenet_loads_torchvision_state_dict(tmp_path: Path, aux: bool, transform: bool,
                                                size: int) -> None:
    config = GoogLeNetConfig(num_classes=6, aux_logits=aux, transform_input=transform
                             ).scaled(16)
    torch.manual_seed(0)
    tv = perturb(TVGoogLeNet(config))
    model = GoogLeNet.from_torchvision(save_state(tv, tmp_path / "g.safetensors"),
                                       transform_input=transform)
    got = model.config if aux else replace(model.config, aux_channels=config.aux_channels,
                                           aux_hidden=config.aux_hidden)  # unused without aux
    assert got == config
    x = images(2, size, seed=2)
    close(ours(model, x), torch_logits(tv, x))


def test_googlenet_training_mode_returns_the_aux_logits_as_torchvision() -> None:
    config = GoogLeNetConfig(num_classes=4, aux_logits=True, dropout=0.0, dropout_aux=0.0
                             ).scaled(16)
    torch.manual_seed(0)
    tv = perturb(TVGoogLeNet(config)).train()
    model = GoogLeNet(config)
    model.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    x = images(4, 64, seed=3)
    g = trace(model, [("N", 3, 64, 64)], training=True)
    assert g.output_names()[:3] == ["output", "aux2", "aux1"]
    from lbdl_graph.backends.numpy import run

    got = run(g, {g.inputs[0].name: x}, training=True)
    with torch.no_grad():
        want = tv(torch.from_numpy(x))
    for k, w in zip(("output", "aux2", "aux1"), want, strict=True):
        # batch statistics of 4 images on 2x2 maps amplify float32 rounding: 1e-4, not 1e-5
        np.testing.assert_allclose(got[k], w.numpy(), rtol=0, atol=1e-4)
    assert ours(model, x).shape == (4, 4)  # evaluation mode: the logits only


# ---- bad input ----


def test_bad_files_name_the_tensor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    alex = save_state(TVAlexNet(3, (4, 4, 4, 4, 4), 8, 2), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor 'conv1\.conv\.weight'"):
        GoogLeNet.from_torchvision(alex)
    with pytest.raises(CheckpointError, match="does not look like a torchvision VGG"):
        VGG.from_torchvision(save_state(TVGoogLeNet(GoogLeNetConfig().scaled(32)),
                                        tmp_path / "g.safetensors"))
    sd = {k: v.contiguous() for k, v in TVAlexNet(3, (4, 4, 4, 4, 4), 8, 2).state_dict().items()}
    sd["features.3.weight"] = torch.zeros(4, 4, 3, 3)  # a 3x3 where AlexNet has 5x5
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: tensor 'features\.3\.weight' "
                                              r"\[4, 4, 3, 3\]"):
        AlexNet.from_torchvision(tmp_path / "bad.safetensors")
    sd["features.3.weight"] = torch.zeros(4, 4, 5, 5)
    sd["classifier.1.weight"] = torch.zeros(8, 17)
    save_file(sd, str(tmp_path / "bad2.safetensors"))
    with pytest.raises(CheckpointError, match=r"'classifier\.1\.weight' takes 17 features"):
        AlexNet.from_torchvision(tmp_path / "bad2.safetensors")
    with pytest.raises(OpError, match="AlexNetConfig: need five positive widths"):
        AlexNet(AlexNetConfig(widths=(4, 4, 4, 4)))  # type: ignore[arg-type]
    with pytest.raises(OpError, match="VGGConfig: layers must be positive widths"):
        VGG(VGGConfig(layers=("M", 0)))
    with pytest.raises(OpError, match="transform_input needs in_channels=3"):
        GoogLeNet(GoogLeNetConfig(in_channels=1, transform_input=True))


# ---- the real torchvision models, when torchvision imports ----


def test_real_torchvision_models(tmp_path: Path) -> None:
    from .test_checkpoints_vision import _torchvision

    tvm = _torchvision().models
    torch.manual_seed(0)
    cases = [(tvm.alexnet(weights=None, num_classes=10), AlexNet, 64),
             (tvm.vgg11(weights=None, num_classes=10), VGG, 32),
             (tvm.googlenet(weights=None, num_classes=10, aux_logits=False,
                            init_weights=True), GoogLeNet, 32)]
    for tv, cls, size in cases:
        tv = perturb(tv)
        model = cls.from_torchvision(save_state(tv, tmp_path / f"{cls.__name__}.safetensors"))
        x = images(1, size, seed=4)
        close(ours(model, x), torch_logits(tv, x))
