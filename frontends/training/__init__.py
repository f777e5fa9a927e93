"""Training: checkpoints, step runners and the ``fit`` loop."""

from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
