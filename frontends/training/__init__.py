"""Training: checkpoints, step runners and the ``fit`` loop."""

from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import LOSSES, METRICS, History, compile_training, evaluate, fit

__all__ = ["LOSSES", "METRICS", "History", "compile_training", "evaluate", "fit",
           "load_checkpoint", "save_checkpoint"]
