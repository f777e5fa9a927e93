"""A ``torch.nn``-like namespace: ``from lbdl_graph.frontends import nn`` gives ``nn.Module``,
``nn.Parameter``, ``nn.Linear``, ... plus ``nn.functional`` and ``nn.init``."""

from __future__ import annotations

from . import functional, init
from .layers import *  # noqa: F403
from .layers import __all__ as _layers
from .module import Module
from .parameter import Buffer, Parameter

__all__ = ["Buffer", "Module", "Parameter", "functional", "init", *_layers]
