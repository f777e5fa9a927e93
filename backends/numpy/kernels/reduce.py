"""NumPy kernels for lbdl_graph.ops.reduce."""

from __future__ import annotations
