"""Checkpoint loaders that need no glue: Hugging Face ``save_pretrained`` directories and
torchvision state dicts (saved with ``safetensors``) -> zoo models.

Each family has one mapping table (:class:`~._io.Rule` rows: zoo tensor, checkpoint
tensors, how) and reads its hyper-parameters from the checkpoint's ``config.json`` (Hugging
Face) or from the tensor shapes (torchvision, which writes no config). The model classes expose
them: ``GPT.from_hf``, ``Bert.from_hf``, ``ViT.from_hf``, ``ViT.from_torchvision``,
``ResNet.from_torchvision``, ``AlexNet.from_torchvision``, ``VGG.from_torchvision`` and
``GoogLeNet.from_torchvision``. Only safetensors files are read (never pickles) and nothing is
downloaded. A missing file, another architecture, a missing, extra or mis-shaped tensor raise
:class:`~lbdl_graph.errors.CheckpointError` naming the file and the tensor; ``strict=False``
skips checkpoint tensors the model has no place for (a task head).
"""

from __future__ import annotations

from ._io import Checkpoint, Rule, read_file, read_hf_dir
from .bert import load_bert
from .gpt2 import load_gpt2
from .torchvision import load_resnet_torchvision, load_vit_torchvision
from .torchvision_cnn import (
    load_alexnet_torchvision,
    load_googlenet_torchvision,
    load_vgg_torchvision,
)
from .vit import load_vit_hf

__all__ = ["Checkpoint", "Rule", "load_alexnet_torchvision", "load_bert",
           "load_googlenet_torchvision", "load_gpt2", "load_resnet_torchvision",
           "load_vgg_torchvision", "load_vit_hf", "load_vit_torchvision", "read_file",
           "read_hf_dir"]
