"""NumPy kernels for lbdl_graph.ops.shape."""

from __future__ import annotations
