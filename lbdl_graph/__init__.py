"""lbdl-graph: a deep-learning graph compiler and runtime.

The core package holds the IR (graphs, ops, types, verifier, printer). Frontends, passes and
backends live in :mod:`lbdl_graph.frontends`, :mod:`lbdl_graph.passes` and
:mod:`lbdl_graph.backends`.
"""

from __future__ import annotations

from . import dtypes, ops
from .builder import GraphBuilder, current_builder
from .dtypes import DType, dtype
from .errors import (
    AutodiffError,
    CheckpointError,
    DistributedError,
    DTypeError,
    ExecutionError,
    GraphError,
    InputError,
    LbdlError,
    NumericError,
    OnnxError,
    OpError,
    ParseError,
    ResourceError,
    ShapeError,
)
from .graph import Graph, Node, Param, Value
from .opdef import OPS, Attr, OpDef, Trait, defop
from .registry import OpTable
from .source import SourceLoc
from .text import parse_graph, print_graph
from .types import TensorType, tensor_type
from .verify import verify

__version__ = "0.1.0"

# The user-facing DSL lives in lbdl_graph.frontends; these names are forwarded lazily so that
# `lbdl_graph.trace(...)` works while the IR modules never import the frontends at import time.
_FRONTEND_NAMES = frozenset({"Tensor", "Module", "Parameter", "Buffer", "InputSpec", "trace",
                             "manual_seed", "nn", "functional", "F", "zoo", "fit"})


def __getattr__(name: str) -> object:
    if name in _FRONTEND_NAMES:
        import importlib

        return getattr(importlib.import_module("lbdl_graph.frontends"), name)
    raise AttributeError(f"module 'lbdl_graph' has no attribute {name!r}")

__all__ = [
    "OPS",
    "Attr",
    "AutodiffError",
    "CheckpointError",
    "DType",
    "DTypeError",
    "DistributedError",
    "ExecutionError",
    "Graph",
    "GraphBuilder",
    "GraphError",
    "InputError",
    "LbdlError",
    "Node",
    "NumericError",
    "OnnxError",
    "OpDef",
    "OpError",
    "OpTable",
    "Param",
    "ParseError",
    "ResourceError",
    "ShapeError",
    "SourceLoc",
    "TensorType",
    "Trait",
    "Value",
    "__version__",
    "current_builder",
    "defop",
    "dtype",
    "dtypes",
    "ops",
    "parse_graph",
    "print_graph",
    "tensor_type",
    "verify",
]
