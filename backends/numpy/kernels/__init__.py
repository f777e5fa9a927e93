"""NumPy kernels: the reference semantics of every op, in :data:`KERNELS`.

A kernel takes the node's input arrays positionally (None for an absent optional input) and its
attributes as keywords, and returns an array (or a tuple for multi-output ops). Kernels follow
the ONNX operator of the same name, so ``onnx.reference`` can serve as an independent oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lbdl_graph.registry import OpTable

Kernel = Callable[..., Any]
KERNELS: OpTable[Kernel] = OpTable("numpy")

# Importing the modules registers their kernels.
from . import (  # noqa: E402, F401
    cache,
    collective,
    control,
    dynamic,
    elementwise,
    fused,
    fused_program,
    nn,
    norm_train,
    quant,
    random,
    reduce,
    shape,
)

__all__ = ["KERNELS", "Kernel", "np"]
