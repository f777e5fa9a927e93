"""Tied weights stored once: a folded transpose of a kept weight becomes a Transpose node.

``fold_params`` stores ``w.T`` beside ``w`` when ``w`` is also read untransposed (a language
model's embedding table that is also its output head). In memory the two share data; an ONNX
file would store both, 154 MB more for GPT-2 small. Exported instead::

    initializer w, initializer w.T   ->   initializer w; w.T = Transpose[perm](w)

ONNX Runtime folds the Transpose when it loads the session, so it runs as fast as before.
"""

from __future__ import annotations

import re

import numpy as np
from onnx import NodeProto, helper

from lbdl_graph.graph import Graph, Param

__all__ = ["tied_transposes"]

_RECIPE = re.compile(r"transpose\[perm=\[([0-9, ]+)\]\]\(([^()]+)\)")
_MIN_BYTES = 1 << 12  # below this a copy costs less than a node


def tied_transposes(graph: Graph) -> tuple[set[str], list[NodeProto]]:
    """The stored transposes of other stored weights, and the Transpose nodes that make them.

    A weight qualifies when ``graph.metadata["folded_params"]`` says it is a transpose of a
    parameter that is stored too and its data equals that transpose (shared memory or equal
    values: a checkpoint may have been merged into both).
    """
    recipes = graph.metadata.get("folded_params") or {}
    by_name: dict[str, Param] = {p.name: p for p in graph.params}
    names: set[str] = set()
    nodes: list[NodeProto] = []
    for name, recipe in recipes.items():
        m = _RECIPE.fullmatch(str(recipe))
        p = by_name.get(name)
        if m is None or p is None or p.data.nbytes < _MIN_BYTES:
            continue
        src = by_name.get(m.group(2))
        perm = [int(a) for a in m.group(1).split(",")]
        if src is None or src.name in names or sorted(perm) != list(range(src.data.ndim)):
            continue
        want = src.data.transpose(perm)
        if want.shape != p.data.shape or want.dtype != p.data.dtype:
            continue
        if not (np.shares_memory(want, p.data) or np.array_equal(want, p.data)):
            continue
        names.add(name)
        nodes.append(helper.make_node("Transpose", [src.name], [name], perm=perm,
                                      name=f"{name}/tied"))
    return names, nodes
