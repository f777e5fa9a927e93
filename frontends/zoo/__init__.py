"""The model zoo: the book's chapter 5 architectures and the small models of chapters 6-7,
written in the DSL like ``torch.nn`` code.

Each family lives in its own module (``mlp``, ``lenet``, ``capsnet``, ``alexnet``, ``vgg``,
``resnet``, ``googlenet``, ``transformer``, ``gpt``, ``bert``, ``vit``, ``autoencoder``, ``unet``,
``detector``, ``clip``, ``dqn``, ``diffusion``, ``gan``, ``gnn``, ``relation``, ``rnn_lm``,
``embedder``, ``siamese``) with Module classes and config dataclasses.
:data:`ZOO` maps every configuration's name to a :class:`ZooEntry` (constructor, example input
specs with a symbolic batch dim ``N``, expected outputs, description, task)::

    from lbdl_graph.frontends.zoo import ZOO
    entry = ZOO["resnet50"]
    model = entry.model()                  # 25,557,032 parameters
    graph = entry.trace(model)             # x: f32[N,3,224,224] -> f32[N,1000]
    feeds = ZOO["gpt_mini"].example_inputs({"N": 2, "T": 16})

``tiny`` entries are test-sized and meant to be run; the others (``alexnet``, ``vgg16``,
``resnet18``, ``resnet50``, ``googlenet``, ``transformer_base``, ``gpt2_small``, ``vit_b16``,
``capsnet_mnist``) are the book-size models.
"""

from __future__ import annotations

from . import (
    alexnet,
    autoencoder,
    bert,
    capsnet,
    clip,
    detector,
    diffusion,
    dqn,
    embedder,
    gan,
    gnn,
    googlenet,
    gpt,
    lenet,
    mlp,
    relation,
    resnet,
    rnn_lm,
    siamese,
    transformer,
    unet,
    vgg,
    vit,
    whisper,
)
from ._common import Unflatten, count_parameters
from ._registry import DEFAULT_DIMS, ZooEntry, concrete_shape
from .alexnet import AlexNet, AlexNetConfig
from .autoencoder import VAE, Autoencoder, AutoencoderConfig, VAEConfig, vae_loss
from .bert import Bert, BertConfig, BertForMaskedLM, BertForSequenceClassification
from .capsnet import CapsNet, CapsNetConfig, capsnet_loss
from .clip import CLIP, CLIPConfig, clip_loss
from .detector import DetectorConfig, TinyDetector
from .diffusion import DiffusionConfig, DiffusionDenoiser, noise_schedule
from .dqn import DQN, DQNConfig
from .embedder import EmbedderConfig, TextEmbedder
from .gan import GAN, Discriminator, GANConfig, Generator
from .gnn import GCN, GCNConfig, GraphConv, normalize_adjacency
from .googlenet import GoogLeNet, GoogLeNetConfig
from .gpt import GPT, GPTConfig
from .lenet import LeNet, LeNetConfig
from .mlp import MLP, MLPConfig
from .relation import RelationNetwork, RelationNetworkConfig
from .resnet import BasicBlock, Bottleneck, ResNet, ResNetConfig
from .rnn_lm import RecurrentLM, RNNLMConfig
from .siamese import Siamese, SiameseConfig
from .transformer import Transformer, TransformerBlock, TransformerConfig
from .unet import UNet, UNetConfig
from .vgg import VGG, VGGConfig
from .vit import ViT, ViTConfig
from .whisper import LogMel, Whisper, WhisperConfig, mel_filterbank

_FAMILIES = (mlp, lenet, capsnet, alexnet, vgg, resnet, googlenet, transformer, gpt, bert, vit,
             autoencoder, unet, detector, clip, dqn, diffusion, gan, gnn, relation, rnn_lm,
             embedder, siamese, whisper)

#: Every zoo configuration by name, in book order.
ZOO: dict[str, ZooEntry] = {e.name: e for fam in _FAMILIES for e in fam.ZOO_ENTRIES}


def get(name: str) -> ZooEntry:
    """The entry called ``name``; a KeyError lists the known names."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"no zoo model {name!r}; known: {', '.join(ZOO)}") from None


def names(tiny: bool | None = None) -> list[str]:
    """Entry names, optionally only the test-size (True) or book-size (False) ones."""
    return [n for n, e in ZOO.items() if tiny is None or e.tiny == tiny]


__all__ = [
    "CLIP",
    "DEFAULT_DIMS",
    "DQN",
    "GAN",
    "GCN",
    "GPT",
    "MLP",
    "VAE",
    "VGG",
    "ZOO",
    "AlexNet",
    "AlexNetConfig",
    "Autoencoder",
    "AutoencoderConfig",
    "BasicBlock",
    "Bert",
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "Bottleneck",
    "CLIPConfig",
    "CapsNet",
    "CapsNetConfig",
    "DQNConfig",
    "DetectorConfig",
    "DiffusionConfig",
    "DiffusionDenoiser",
    "Discriminator",
    "EmbedderConfig",
    "GANConfig",
    "GCNConfig",
    "GPTConfig",
    "Generator",
    "GoogLeNet",
    "GoogLeNetConfig",
    "GraphConv",
    "LeNet",
    "LeNetConfig",
    "LogMel",
    "MLPConfig",
    "RNNLMConfig",
    "RecurrentLM",
    "RelationNetwork",
    "RelationNetworkConfig",
    "ResNet",
    "ResNetConfig",
    "Siamese",
    "SiameseConfig",
    "TextEmbedder",
    "TinyDetector",
    "Transformer",
    "TransformerBlock",
    "TransformerConfig",
    "UNet",
    "UNetConfig",
    "Unflatten",
    "VAEConfig",
    "VGGConfig",
    "ViT",
    "ViTConfig",
    "Whisper",
    "WhisperConfig",
    "ZooEntry",
    "capsnet_loss",
    "clip_loss",
    "concrete_shape",
    "count_parameters",
    "get",
    "mel_filterbank",
    "names",
    "noise_schedule",
    "normalize_adjacency",
    "vae_loss",
]
