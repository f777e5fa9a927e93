"""NumPy kernels for lbdl_graph.ops.random."""

from __future__ import annotations
