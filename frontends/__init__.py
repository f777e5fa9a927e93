"""The Python DSL: symbolic tensors, modules, layers, the functional API and tracing.

Write a model as in PyTorch, then ``trace(model, [("N", 784)])`` turns it into a verified
:class:`~lbdl_graph.graph.Graph`::

    from lbdl_graph.frontends import nn, trace, functional as F

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(784, 128), nn.Linear(128, 10)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    graph = trace(MLP(), [("N", 784)])
"""

from __future__ import annotations

from . import functional, init, layers, nn
from . import functional as F
from .init import manual_seed
from .layers import *  # noqa: F403
from .layers import __all__ as _layers
from .module import IncompatibleKeys, Module
from .parameter import Buffer, Parameter
from .tensor import MinMax, Tensor, as_tensor
from .trace import InputSpec, trace

__all__ = [
    "F",
    "Buffer",
    "IncompatibleKeys",
    "InputSpec",
    "MinMax",
    "Module",
    "Parameter",
    "Tensor",
    "as_tensor",
    "functional",
    "init",
    "layers",
    "manual_seed",
    "nn",
    "trace",
    *_layers,
]
