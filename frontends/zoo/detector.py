"""A tiny single-shot object detector (book section 6.3, SSD-like; Liu et al. 2016).

A convolutional backbone of stride-2 conv-BN-ReLU stages turns the image into a G x G grid of
features. At every cell, for every anchor (a box of fixed aspect centred on the cell), a 3x3
convolution predicts four box offsets and another the logits of ``num_classes`` object classes
plus background (class 0). Offsets are decoded as in SSD / Faster R-CNN:
``centre = anchor_centre + delta_xy * anchor_wh`` and ``size = anchor_wh * exp(delta_wh)``
(delta_wh clipped at log(1000/16) as torchvision does). Boxes are (cx, cy, w, h) in image
fractions; the anchors are a non-persistent buffer computed from the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lbdl_graph.errors import OpError

from .. import functional as F
from ..layers import BatchNorm2d, Conv2d, ReLU, Sequential
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "DetectorConfig", "TinyDetector", "make_anchors"]

_MAX_LOG_SCALE = math.log(1000.0 / 16)


@dataclass(frozen=True)
class DetectorConfig:
    """Backbone ``widths`` (one stride-2 stage each), object classes, and the anchors' (w, h)
    in grid cells."""

    image_size: int = 64
    in_channels: int = 3
    widths: tuple[int, ...] = (8, 16, 32)
    num_classes: int = 3
    anchor_sizes: tuple[tuple[float, float], ...] = ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0))

    @property
    def grid(self) -> int:
        """G, the side of the feature grid."""
        return self.image_size // 2 ** len(self.widths)

    @property
    def num_boxes(self) -> int:
        """Predictions per image: G * G * anchors."""
        return self.grid**2 * len(self.anchor_sizes)


def make_anchors(grid: int, sizes: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(G*G*A, 4) anchors (cx, cy, w, h) in image fractions, ordered row, column, anchor."""
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
    wh = np.asarray(sizes, dtype=np.float64).reshape(1, -1, 2) / grid
    out = np.concatenate([np.broadcast_to(centres, (grid * grid, len(sizes), 2)),
                          np.broadcast_to(wh, (grid * grid, len(sizes), 2))], -1)
    return out.reshape(-1, 4).astype(np.float32)


class TinyDetector(Module):
    """``forward(images)`` -> ``{"boxes": (N, P, 4), "deltas": (N, P, 4),
    "logits": (N, P, num_classes + 1)}`` with P = G * G * anchors."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DetectorConfig()
        if c.grid < 1 or c.grid * 2 ** len(c.widths) != c.image_size:
            raise OpError(f"DetectorConfig: image size {c.image_size} must be divisible by "
                          f"2^{len(c.widths)}")
        stages: list[Module] = []
        for a, b in zip((c.in_channels, *c.widths[:-1]), c.widths, strict=True):
            stages += [Conv2d(a, b, 3, stride=2, padding=1, bias=False), BatchNorm2d(b), ReLU()]
        self.backbone = Sequential(*stages)
        a, w = len(c.anchor_sizes), c.widths[-1]
        self.box_head = Conv2d(w, a * 4, 3, padding=1)
        self.cls_head = Conv2d(w, a * (c.num_classes + 1), 3, padding=1)
        self.register_buffer("anchors", make_anchors(c.grid, c.anchor_sizes), persistent=False)

    @staticmethod
    def _per_anchor(y: Tensor, k: int) -> Tensor:
        """(N, A*k, G, G) -> (N, G*G*A, k)."""
        return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, k)

    def decode(self, deltas: Tensor) -> Tensor:
        """Offsets (N, P, 4) -> boxes (cx, cy, w, h) (N, P, 4)."""
        anchors = self.anchors
        centre, size = anchors[:, :2], anchors[:, 2:]
        xy = centre + deltas[..., :2] * size
        wh = size * deltas[..., 2:].clamp(max=_MAX_LOG_SCALE).exp()
        return F.cat([xy, wh], -1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Boxes, raw offsets and class logits for every anchor."""
        f = self.backbone(images)
        deltas = self._per_anchor(self.box_head(f), 4)
        logits = self._per_anchor(self.cls_head(f), self.config.num_classes + 1)
        return {"boxes": self.decode(deltas), "deltas": deltas, "logits": logits}


ZOO_ENTRIES = [
    ZooEntry(
        name="detector_tiny",
        config=DetectorConfig(),
        build=TinyDetector,
        inputs={"images": InputSpec(("N", 3, 64, 64))},
        outputs={"boxes": ("N", 192, 4), "deltas": ("N", 192, 4), "logits": ("N", 192, 4)},
        description="single-shot detector: 3 stride-2 conv-BN-ReLU stages to an 8x8 grid, 3 "
                    "anchors per cell, box offsets decoded against the anchors, 3 classes + "
                    "background",
        task="object detection",
    ),
]
