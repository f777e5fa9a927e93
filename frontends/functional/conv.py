"""Convolutions, transposed convolutions and padding (book section 4.2).

Arguments follow ``torch.nn.functional``: PyTorch's symmetric ``padding`` becomes the IR's
ONNX-style ``pads = (begins..., ends...)``; ``padding='same'`` puts the odd extra pixel at the
end, as PyTorch does. Unbatched inputs (no N dim) are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbdl_graph import ops
from lbdl_graph.errors import OpError, ShapeError

from ..tensor import Tensor, as_tensor, error
from ._util import float_tensor, ntuple

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "pad"]

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _batched(x: Any, k: int, what: str) -> tuple[Tensor, bool]:
    t = float_tensor(x, what)
    if t.ndim == k + 1:
        return t.unsqueeze(0), True
    if t.ndim != k + 2:
        raise error(ShapeError, f"{what} expects a rank-{k + 2} (N, C, ...) or rank-{k + 1} "
                    f"input, got {t.type}")
    return t, False


def _conv_pads(padding: int | Sequence[int] | str, w: Tensor, stride: tuple[int, ...],
               dilation: tuple[int, ...], k: int, what: str) -> tuple[int, ...]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * (2 * k)
        if padding != "same":
            raise error(OpError, f"{what}: padding must be 'same', 'valid' or ints, got "
                        f"{padding!r}")
        if any(s != 1 for s in stride):
            raise error(ShapeError, f"{what}: padding='same' needs stride 1, got {stride}")
        total = [d * (int(n) - 1) for d, n in zip(dilation, w.shape[2:], strict=True)]
        return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
    p = ntuple(padding, k, f"{what} padding")
    if min(p) < 0:
        raise error(ShapeError, f"{what}: padding must be >= 0, got {p}")
    return p + p


def _conv(x: Any, weight: Any, bias: Any | None, stride: Any, padding: Any, dilation: Any,
          groups: int, k: int, what: str) -> Tensor:
    t, unbatched = _batched(x, k, what)
    w = as_tensor(weight)
    if w.ndim != k + 2:
        raise error(ShapeError, f"{what}: weight must have rank {k + 2}, got {w.type}")
    s = ntuple(stride, k, f"{what} stride")
    d = ntuple(dilation, k, f"{what} dilation")
    pads = _conv_pads(padding, w, s, d, k, what)
    b = None if bias is None else as_tensor(bias).value
    y = Tensor(ops.conv(t.value, w.value, b, strides=s, pads=pads, dilations=d, group=groups))
    return y.squeeze(0) if unbatched else y


def conv1d(x: Any, weight: Any, bias: Any | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """1D convolution of (N, C_in, L) with weight (C_out, C_in/groups, K)."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(x: Any, weight: Any, bias: Any | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2D convolution of (N, C_in, H, W) with weight (C_out, C_in/groups, KH, KW)."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def _conv_transpose(x: Any, weight: Any, bias: Any | None, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any, k: int,
                    what: str) -> Tensor:
    t, unbatched = _batched(x, k, what)
    w = as_tensor(weight)
    if w.ndim != k + 2:
        raise error(ShapeError, f"{what}: weight must have rank {k + 2}, got {w.type}")
    s = ntuple(stride, k, f"{what} stride")
    d = ntuple(dilation, k, f"{what} dilation")
    p = ntuple(padding, k, f"{what} padding")
    op = ntuple(output_padding, k, f"{what} output_padding")
    if min(p) < 0:
        raise error(ShapeError, f"{what}: padding must be >= 0, got {p}")
    b = None if bias is None else as_tensor(bias).value
    y = Tensor(ops.conv_transpose(t.value, w.value, b, strides=s, pads=p + p, dilations=d,
                                  group=groups, output_padding=op))
    return y.squeeze(0) if unbatched else y


def conv_transpose1d(x: Any, weight: Any, bias: Any | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                     dilation: Any = 1) -> Tensor:
    """1D transposed convolution with weight (C_in, C_out/groups, K)."""
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation,
                           1, "conv_transpose1d")


def conv_transpose2d(x: Any, weight: Any, bias: Any | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                     dilation: Any = 1) -> Tensor:
    """2D transposed convolution with weight (C_in, C_out/groups, KH, KW)."""
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation,
                           2, "conv_transpose2d")


def pad(x: Any, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad the last ``len(pad)//2`` dims; ``pad`` lists (left, right) pairs from the last dim
    backwards, as in PyTorch. Modes: constant, reflect, replicate."""
    t = as_tensor(x)
    if mode not in _PAD_MODES:
        raise error(OpError, f"pad mode must be one of {sorted(_PAD_MODES)}, got {mode!r}")
    amounts = [int(a) for a in pad]
    if len(amounts) % 2 or len(amounts) > 2 * t.ndim:
        raise error(ShapeError, f"pad {tuple(pad)} needs (left, right) pairs for at most "
                    f"{t.ndim} dims of {t.type}")
    if min(amounts, default=0) < 0:
        raise error(ShapeError, f"negative padding {tuple(pad)} is not supported")
    begins, ends = [0] * t.ndim, [0] * t.ndim
    for i in range(len(amounts) // 2):
        axis = t.ndim - 1 - i
        begins[axis], ends[axis] = amounts[2 * i], amounts[2 * i + 1]
    return Tensor(ops.pad(t.value, pads=begins + ends, mode=_PAD_MODES[mode], value=value))
