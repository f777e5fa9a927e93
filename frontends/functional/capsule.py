"""Capsule functions (Sabour, Frosst and Hinton 2017, "Dynamic Routing Between Capsules"):
the squash non-linearity, routing-by-agreement and the margin loss.

Everything is written with ordinary ops, so the routing iterations are unrolled into graph
nodes, differentiated through by the autodiff pass and exported to ONNX like any layer.
"""

from __future__ import annotations

from typing import Any

from lbdl_graph.errors import DTypeError, OpError, ShapeError

from ..tensor import Tensor, as_tensor, error
from ._util import float_tensor
from .linear import one_hot
from .manipulation import full_like

__all__ = ["dynamic_routing", "margin_loss", "squash"]


def squash(x: Any, dim: int = -1, eps: float = 1e-7) -> Tensor:
    """``|s|^2 / (1 + |s|^2) * s / |s|`` along ``dim`` (equation 1 of the paper): short vectors
    shrink to almost zero, long ones to just below unit length. ``|s|`` is computed as
    ``sqrt(|s|^2 + eps)`` so that the zero vector has a finite gradient."""
    s = float_tensor(x, "squash")
    if s.ndim == 0:
        raise error(ShapeError, f"squash needs at least one dim, got {s.type}")
    sq = (s * s).sum(dim, keepdim=True)
    return s * (sq / ((sq + 1.0) * (sq + eps).sqrt()))


def dynamic_routing(u_hat: Any, iterations: int = 3) -> tuple[Tensor, Tensor]:
    """Routing-by-agreement (procedure 1 of the paper) on the predictions ``u_hat``
    (N, in_caps, out_caps, out_dim) that every lower capsule i makes for every upper capsule j.

    The logits ``b_ij`` start at zero; each of the ``iterations`` rounds takes coupling
    coefficients ``c_ij = softmax_j(b_ij)``, the upper capsules ``v_j = squash(sum_i c_ij
    u_hat_j|i)`` and, except in the last round, adds the agreement ``u_hat_j|i . v_j`` to
    ``b_ij``. Every round is a set of graph nodes and gradients flow through all of them.
    Returns ``(v (N, out_caps, out_dim), c (N, in_caps, out_caps))``, the last round's
    coefficients."""
    u = float_tensor(u_hat, "dynamic_routing")
    if u.ndim != 4:
        raise error(ShapeError, "dynamic_routing: u_hat must be (N, in_caps, out_caps, out_dim), "
                    f"got {u.type}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise error(OpError, f"dynamic_routing: iterations must be an integer >= 1, got "
                    f"{iterations!r}")
    n_out = u.shape[2]
    if not isinstance(n_out, int):
        raise error(ShapeError, f"dynamic_routing needs a static number of output capsules, got "
                    f"{u.type}")
    b: Tensor | None = None  # zero logits: the first round's coefficients are uniform
    c: Tensor | None = None
    v: Tensor | None = None
    for r in range(iterations):
        if b is None:  # c_ij = 1 / out_caps: the sum over i scaled, no softmax of zeros needed
            s = u.sum(1) * (1.0 / n_out)
        else:
            c = b.softmax(-1)
            s = (c.unsqueeze(-1) * u).sum(1)  # (N, out_caps, out_dim)
        v = squash(s, -1)
        if r + 1 < iterations:
            agree = (u * v.unsqueeze(1)).sum(-1)  # (N, in_caps, out_caps)
            b = agree if b is None else b + agree
    if c is None:
        c = full_like(u[..., 0], 1.0 / n_out)
    assert v is not None
    return v, c


def margin_loss(lengths: Any, target: Any, *, m_plus: float = 0.9, m_minus: float = 0.1,
                lam: float = 0.5, reduction: str = "mean") -> Tensor:
    """The capsule margin loss (equation 4 of the paper) of capsule lengths (N, C) and class
    indices ``target`` (N,): ``T_k max(0, m+ - |v_k|)^2 + lam (1 - T_k) max(0, |v_k| - m-)^2``
    summed over the classes k, then averaged ('mean'), summed ('sum') or kept per sample
    ('none') over the batch."""
    x = float_tensor(lengths, "margin_loss")
    t = target if isinstance(target, Tensor) else as_tensor(target)
    if x.ndim != 2:
        raise error(ShapeError, f"margin_loss: lengths must be (N, C), got {x.type}")
    if not t.dtype.is_integer or t.ndim != 1:
        raise error(DTypeError, f"margin_loss: target must be int class indices (N,), got "
                    f"{t.type}")
    classes = x.shape[1]
    if not isinstance(classes, int):
        raise error(ShapeError, f"margin_loss needs a static number of classes, got {x.type}")
    onehot = one_hot(t, classes).to(x.dtype)
    pos = (m_plus - x).relu()
    neg = (x - m_minus).relu()
    per = (onehot * pos * pos + (1.0 - onehot) * (neg * neg) * lam).sum(1)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    if reduction == "none":
        return per
    raise error(OpError, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
