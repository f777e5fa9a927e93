"""SVG pictures laid out by Graphviz ``dot``: finding the engine, running it, :func:`to_svg`.

The engine is a system ``dot`` when one is on ``PATH``, else the ``graphviz-pure`` binary that
the ``graphviz-pure`` wheel installs (a dependency; a Rust port of Graphviz's dot), found on
``PATH`` or through the wheel's file list; ``$LBDL_DOT`` names another dot-compatible binary.
It runs under a time limit and fails with :class:`LayoutError`, never hangs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from lbdl_graph.errors import LbdlError
from lbdl_graph.graph import Graph

from .collapse import MAX_BOXES, TARGET_BOXES, ParamMode, Picture, collapse
from .common import Bindings
from .dot import dot_document, highlight_boxes, picture_dot
from .svg_geometry import parse_svg

__all__ = ["MAX_SIDE_PX", "LayoutError", "draw_svg", "find_engine", "fit_depth", "run_dot",
           "to_svg"]

TIMEOUT_S = 120.0
MAX_SIDE_PX = 4000.0  # the long side of a default picture, in px at 100 %


class LayoutError(LbdlError):
    """The layout engine is missing, failed, or ran past its time limit."""


def _wheel_binary() -> str | None:
    """The ``graphviz-pure`` executable listed in the installed wheel's RECORD, if any."""
    try:
        dist = metadata.distribution("graphviz-pure")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name in ("graphviz-pure", "graphviz-pure.exe"):
            path = Path(str(dist.locate_file(f))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def find_engine() -> str:
    """The dot-compatible executable to run: ``$LBDL_DOT``, ``dot``, then ``graphviz-pure``."""
    forced = os.environ.get("LBDL_DOT")
    if forced:
        exe = shutil.which(forced)
        if exe is None:
            raise LayoutError(f"LBDL_DOT={forced!r} is not an executable")
        return exe
    exe = shutil.which("dot") or shutil.which("graphviz-pure") or _wheel_binary()
    if exe is None:
        raise LayoutError("no Graphviz layout engine: install the graphviz-pure wheel "
                          "(pip install graphviz-pure) or Graphviz's dot")
    return exe


def run_dot(text: str, *, fmt: str = "svg", timeout: float = TIMEOUT_S,
            engine: str | None = None) -> str:
    """Lay out DOT ``text`` and return the ``-T<fmt>`` output (SVG by default)."""
    exe = engine or find_engine()
    try:
        res = subprocess.run([exe, f"-T{fmt}"], input=text.encode(), capture_output=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LayoutError(f"{Path(exe).name} did not finish the layout in {timeout:g} s; "
                          "draw fewer boxes (a smaller depth) or browse the graph with "
                          "`lbdl-graph explore`") from None
    except OSError as e:
        raise LayoutError(f"cannot run {exe}: {e.strerror or e}") from None
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise LayoutError(f"{Path(exe).name} failed (exit {res.returncode}): {err[:400]}")
    return res.stdout.decode()


def to_svg(graph: Graph, **kw: Any) -> str:
    """An SVG picture of ``graph`` collapsed by scope and laid out by ``dot`` (the keywords
    of :func:`draw_svg`)."""
    return draw_svg(graph, **kw)[0]


def draw_svg(
    graph: Graph,
    *,
    depth: int | None = None,
    expand: Iterable[str] = (),
    focus: str | None = None,
    params: ParamMode = "inline",
    cluster: bool = True,
    highlight: Mapping[str, str] | Iterable[str] | None = None,
    bindings: Bindings | None = None,
    title: str | None = None,
    target: int = TARGET_BOXES,
    max_boxes: int = MAX_BOXES,
    max_side_px: float = MAX_SIDE_PX,
    timeout: float = TIMEOUT_S,
    engine: str | None = None,
) -> tuple[str, Picture]:
    """An SVG picture of ``graph`` collapsed by scope and laid out by ``dot``, and the
    :class:`.collapse.Picture` it draws.

    ``depth`` (default: the deepest with at most ``target`` boxes whose picture is at most
    ``max_side_px`` on its long side), ``expand``, ``focus`` and ``params`` are those of
    :func:`.collapse.collapse`; ``highlight`` marks nodes (a mapping gives each a fill
    colour); ``title`` replaces the caption's graph name.
    """

    def draw(d: int | None) -> tuple[str, Picture]:
        pic = collapse(graph, depth=d, expand=expand, focus=focus, params=params,
                       bindings=bindings, target=target, max_boxes=max_boxes)
        if title is not None:
            pic.name = title
        classes, fills = highlight_boxes(pic, highlight)
        text = dot_document(graph.name, picture_dot(pic, cluster=cluster, classes=classes,
                                                    fills=fills), label=pic.label)
        return run_dot(text, timeout=timeout, engine=engine), pic

    return fit_depth(draw, depth, max_side_px)


def fit_depth(draw: Callable[[int | None], tuple[str, Picture]], depth: int | None,
              max_side_px: float) -> tuple[str, Picture]:
    """``draw(depth)``; with an automatic depth, one level less while the SVG's long side is
    over ``max_side_px`` (a picture of few boxes can still be tall: 12 blocks of 3 boxes)."""
    svg, pic = draw(depth)
    while depth is None and pic.depth > 1 and parse_svg(svg).long_side_px > max_side_px:
        svg, pic = draw(pic.depth - 1)
    return svg, pic
