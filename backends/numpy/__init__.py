"""The NumPy reference interpreter."""

from __future__ import annotations

from .interpreter import Interpreter, NodeProfile, run
from .kernels import KERNELS

__all__ = ["KERNELS", "Interpreter", "NodeProfile", "run"]
