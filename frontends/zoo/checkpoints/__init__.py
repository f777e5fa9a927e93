"""Checkpoint loaders that need no glue: Hugging Face ``save_pretrained`` directories and
torchvision state dicts (saved with ``safetensors``) -> zoo models.

Each family has one mapping table (:class:`~._io.Rule` rows: zoo tensor, checkpoint
tensors, how) and reads its hyper-parameters from the checkpoint's ``config.json`` (Hugging
Face) or from the tensor shapes (torchvision, which writes no config). The model classes expose
them as ``GPT.from_hf``, ``Bert.from_hf``, ``ViT.from_hf``, ``ViT.from_torchvision`` and
``ResNet.from_torchvision``. Only safetensors files are read (never pickles) and nothing is
downloaded. A missing file, another architecture, a missing or mis-shaped tensor raise
:class:`~lbdl_graph.errors.CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

from ._io import Checkpoint, Rule, read_file, read_hf_dir
from .gpt2 import load_gpt2

__all__ = ["Checkpoint", "Rule", "load_gpt2", "read_file", "read_hf_dir"]
