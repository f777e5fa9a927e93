"""Interpretability as graph transforms: saliency maps, integrated gradients, activation
maximisation (book's "missing bits", seed course chapter 7.5), and a small PNG writer for the
pictures they make.

Each transform takes any inference :class:`~lbdl_graph.graph.Graph` and returns another graph
built with the symbolic autodiff pass, so the attribution can itself be printed, inspected,
exported to ONNX and run on any backend.
"""

from __future__ import annotations

from .png import diverging, image_grid, write_png
from .saliency import (
    activation_maximization,
    activation_step,
    inline_graph,
    input_gradient,
    integrated_gradients,
    score_of,
)

__all__ = ["activation_maximization", "activation_step", "diverging", "image_grid", "inline_graph",
           "input_gradient", "integrated_gradients", "score_of", "write_png"]
