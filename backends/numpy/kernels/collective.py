"""NumPy kernel of the collective ops: calls the reducer bound at run time."""

from __future__ import annotations

import numpy as np

from lbdl_graph import ops
from lbdl_graph.backends.collectives import reduce

from . import KERNELS


@KERNELS.register(ops.all_reduce)
def _all_reduce_kernel(x: np.ndarray, *, group: str) -> np.ndarray:
    """The sum of x over the processes of ``group`` (x itself in a lone process)."""
    return reduce(np.asarray(x), group)
