"""NumPy kernels for lbdl_graph.ops.elementwise."""

from __future__ import annotations
