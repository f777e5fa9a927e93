"""Box geometry of an SVG picture written by Graphviz: sizes in px, overlaps, font sizes.

:func:`parse_svg` reads the document size (``pt``/``px``/``in``/... units, 96 px per inch,
so 1 pt = 4/3 px), applies the ``transform`` of every group, and collects the bounding box of
each ``<g class="node">`` (its polygons, polylines, paths, ellipses and rects) and of each
``<g class="cluster">``, plus the size of every ``<text>`` in px at 100 % zoom. Tests and
``benchmarks/viewer.py`` use it to check that boxes do not overlap and that pictures stay
within their bounds.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

__all__ = ["Rect", "SvgGeometry", "parse_svg"]

_NS = "{http://www.w3.org/2000/svg}"
_PX_PER = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
           "mm": 96 / 25.4}
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_LEN = re.compile(r"^\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*([a-z]*)\s*$")
_TF = re.compile(r"(matrix|translate|scale|rotate)\s*\(([^)]*)\)")
Matrix = tuple[float, float, float, float, float, float]  # a b c d e f as in SVG
_ID: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class Rect:
    """The bounding box of one element, in px of the rendered picture."""

    id: str
    classes: tuple[str, ...]
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        """Horizontal size in px."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Vertical size in px."""
        return self.y1 - self.y0


@dataclass
class SvgGeometry:
    """What :func:`parse_svg` found: document size, boxes, frames and text sizes (all px)."""

    width_px: float
    height_px: float
    bytes: int
    boxes: list[Rect] = field(default_factory=list)
    frames: list[Rect] = field(default_factory=list)
    font_px: list[float] = field(default_factory=list)

    @property
    def long_side_px(self) -> float:
        """The longer side of the document."""
        return max(self.width_px, self.height_px)

    @property
    def min_font_px(self) -> float:
        """The smallest text (``inf`` without text)."""
        return min(self.font_px, default=math.inf)

    def overlaps(self, tol: float = 0.5) -> list[tuple[str, str]]:
        """Pairs of boxes whose interiors intersect by more than ``tol`` px each way."""
        out: list[tuple[str, str]] = []
        active: list[Rect] = []
        for r in sorted(self.boxes, key=lambda b: b.x0):
            active = [a for a in active if a.x1 - tol > r.x0]
            out += [(a.id, r.id) for a in active
                    if a.y0 < r.y1 - tol and r.y0 < a.y1 - tol]
            active.append(r)
        return out


def _length(text: str | None, what: str) -> float:
    m = _LEN.match(text or "")
    if m is None or m.group(2) not in _PX_PER:
        raise ValueError(f"SVG {what} {text!r} is not a length")
    return float(m.group(1)) * _PX_PER[m.group(2)]


def _mul(m: Matrix, n: Matrix) -> Matrix:
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (a * a2 + c * b2, b * a2 + d * b2, a * c2 + c * d2, b * c2 + d * d2,
            a * e2 + c * f2 + e, b * e2 + d * f2 + f)


def _transform(text: str | None) -> Matrix:
    m = _ID
    for kind, args in _TF.findall(text or ""):
        v = [float(x) for x in _NUM.findall(args)]
        if kind == "matrix" and len(v) == 6:
            t: Matrix = (v[0], v[1], v[2], v[3], v[4], v[5])
        elif kind == "translate":
            t = (1, 0, 0, 1, v[0], v[1] if len(v) > 1 else 0.0)
        elif kind == "scale":
            t = (v[0], 0, 0, v[1] if len(v) > 1 else v[0], 0, 0)
        elif kind == "rotate":
            r = math.radians(v[0])
            t = (math.cos(r), math.sin(r), -math.sin(r), math.cos(r), 0, 0)
            if len(v) == 3:
                t = _mul(_mul((1, 0, 0, 1, v[1], v[2]), t), (1, 0, 0, 1, -v[1], -v[2]))
        else:
            raise ValueError(f"SVG transform {kind}({args}) is malformed")
        m = _mul(m, t)
    return m


def _points(el: ET.Element) -> list[tuple[float, float]]:
    """Corner points of one shape element (in its own coordinates)."""
    tag = el.tag.removeprefix(_NS)
    if tag in ("polygon", "polyline"):
        v = [float(x) for x in _NUM.findall(el.get("points", ""))]
        return list(zip(v[::2], v[1::2], strict=False))
    if tag == "path":  # Graphviz writes absolute M/C/L commands: every pair is a point
        v = [float(x) for x in _NUM.findall(el.get("d", ""))]
        return list(zip(v[::2], v[1::2], strict=False))
    if tag == "ellipse":
        cx, cy = float(el.get("cx", 0)), float(el.get("cy", 0))
        rx, ry = float(el.get("rx", 0)), float(el.get("ry", 0))
        return [(cx - rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx + rx, cy - ry)]
    if tag == "rect":
        x, y = float(el.get("x", 0)), float(el.get("y", 0))
        w, h = float(el.get("width", 0)), float(el.get("height", 0))
        return [(x, y), (x + w, y + h), (x, y + h), (x + w, y)]
    return []


def _font_size(el: ET.Element) -> float | None:
    size = el.get("font-size")
    m = re.search(r"font-size\s*:\s*([^;]+)", el.get("style", ""))
    if m is not None:
        size = m.group(1)
    return _length(size, "font-size") if size is not None else None


def parse_svg(svg: str | bytes) -> SvgGeometry:
    """The geometry of an SVG document (see the module doc); raises ValueError if malformed."""
    raw = svg.encode() if isinstance(svg, str) else svg
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        raise ValueError(f"not an SVG document: {e}") from None
    if root.tag != f"{_NS}svg":
        raise ValueError(f"not an SVG document: root element {root.tag}")
    w, h = _length(root.get("width"), "width"), _length(root.get("height"), "height")
    vb = [float(x) for x in _NUM.findall(root.get("viewBox", ""))]
    sx, sy = (w / vb[2], h / vb[3]) if len(vb) == 4 and vb[2] and vb[3] else (1.0, 1.0)
    x0, y0 = (vb[0], vb[1]) if len(vb) == 4 else (0.0, 0.0)
    geo = SvgGeometry(w, h, len(raw))

    def shapes(el: ET.Element, m: Matrix) -> list[tuple[float, float]]:
        m = _mul(m, _transform(el.get("transform")))
        pts = [(m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5]) for x, y in _points(el)]
        tag = el.tag.removeprefix(_NS)
        if tag == "text":
            size = _font_size(el)
            if size is not None:
                geo.font_px.append(size * math.sqrt(abs(m[0] * m[3] - m[1] * m[2])))
            return pts
        if tag == "g" and el is not root:
            cls = tuple((el.get("class") or "").split())
            inner = [p for c in el for p in shapes(c, m)]
            if ("node" in cls or "cluster" in cls) and inner:
                xs, ys = [p[0] for p in inner], [p[1] for p in inner]
                rect = Rect(el.get("id", ""), cls, min(xs), min(ys), max(xs), max(ys))
                (geo.boxes if "node" in cls else geo.frames).append(rect)
                # frames do not count towards the boxes of an enclosing group
                return [] if "cluster" in cls else pts + inner
            return pts + inner
        return pts + [p for c in el for p in shapes(c, m)]

    base: Matrix = (sx, 0.0, 0.0, sy, -x0 * sx, -y0 * sy)
    for child in root:
        shapes(child, base)
    return geo
