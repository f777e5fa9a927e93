"""Losses: mean squared error, cross-entropy from logits, NLL, binary cross-entropy and the
contrastive losses of metric learning: the book's triplet margin loss (section 3.1), the
margin contrastive loss of Siamese networks (Hadsell et al. 2006) and InfoNCE, CLIP's loss.

Arguments follow ``torch.nn.functional`` positions (``weight`` third where PyTorch has it) with
``reduction`` in ('mean', 'sum', 'none') as a keyword. Cross-entropy accepts class indices (int)
or class probabilities (float) as targets, class weights and ``label_smoothing``; there is no
``ignore_index``.
"""

from __future__ import annotations

from typing import Any

from lbdl_graph import ops
from lbdl_graph.errors import DTypeError, OpError, ShapeError

from ..tensor import Tensor, as_tensor, error
from ._util import const, float_tensor

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "contrastive_loss",
    "cross_entropy",
    "info_nce",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "pairwise_distance",
    "triplet_margin_loss",
]


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise error(OpError, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise error(ShapeError, f"{what}: input {a.type} and target {b.type} must have the same "
                    "shape")


def _target(target: Any, like: Tensor) -> Tensor:
    return target if isinstance(target, Tensor) else as_tensor(target, like.dtype)


def mse_loss(input: Any, target: Any, *, reduction: str = "mean") -> Tensor:
    """Mean (or sum) of squared differences."""
    x = float_tensor(input, "mse_loss")
    y = _target(target, x)
    _same_shape(x, y, "mse_loss")
    d = x - y
    return _reduce(d * d, reduction)


def l1_loss(input: Any, target: Any, *, reduction: str = "mean") -> Tensor:
    """Mean (or sum) of absolute differences."""
    x = float_tensor(input, "l1_loss")
    y = _target(target, x)
    _same_shape(x, y, "l1_loss")
    return _reduce((x - y).abs(), reduction)


def _class_axis(x: Tensor, what: str) -> int:
    if x.ndim == 0:
        raise error(ShapeError, f"{what} expects (N, C, ...) or (C,) input, got {x.type}")
    return 1 if x.ndim >= 2 else 0


def _static_classes(x: Tensor, axis: int) -> int:
    c = x.shape[axis]
    if not isinstance(c, int):
        raise error(ShapeError, f"cross_entropy: label_smoothing needs a static number of "
                    f"classes, got {x.type}")
    return c


def _indices(target: Any, what: str) -> Tensor:
    t = target if isinstance(target, Tensor) else as_tensor(target)
    if not t.dtype.is_integer:
        raise error(DTypeError, f"{what}: target must hold class indices (int), got {t.type}")
    return t


def _pick(logp: Tensor, target: Tensor, axis: int, what: str) -> Tensor:
    """``logp`` at the target class along ``axis`` (class indices)."""
    expected = logp.shape[:axis] + logp.shape[axis + 1:]
    if target.shape != expected:
        raise error(ShapeError, f"{what}: target {target.type} should have shape "
                    f"{list(expected)} for input {logp.type} (classes on dim {axis})")
    idx = target.unsqueeze(axis)
    return Tensor(ops.gather_elements(logp.value, idx.value, axis=axis)).squeeze(axis)


def _class_weight(weight: Any, x: Tensor, axis: int, what: str) -> Tensor:
    w = _target(weight, x)
    if w.shape != (x.shape[axis],):
        raise error(ShapeError, f"{what}: weight {w.type} should have one entry per class "
                    f"({x.shape[axis]})")
    return w


def _weighted_nll(logp: Tensor, t: Tensor, weight: Any | None, axis: int, what: str
                  ) -> tuple[Tensor, Tensor | None]:
    """Per-element ``-w[t]·logp[t]`` and, with class weights, ``w[t]`` (the mean's divisor)."""
    loss = -_pick(logp, t, axis, what)
    if weight is None:
        return loss, None
    wt = _rows(_class_weight(weight, logp, axis, what), t)
    return loss * wt, wt


def _rows(w: Tensor, t: Tensor) -> Tensor:
    """``w[t]`` for a vector ``w`` and integer indices ``t``."""
    return Tensor(ops.gather(w.value, t.value, axis=0))


def _reduce_weighted(loss: Tensor, wt: Tensor | None, reduction: str) -> Tensor:
    if wt is not None and reduction == "mean":  # PyTorch divides by the total target weight
        return loss.sum() / wt.sum()
    return _reduce(loss, reduction)


def nll_loss(input: Any, target: Any, weight: Any | None = None, *,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` at class indices ``target``;
    ``weight`` rescales each class (the mean divides by the total weight, as in PyTorch)."""
    logp = float_tensor(input, "nll_loss")
    t = _indices(target, "nll_loss")
    axis = _class_axis(logp, "nll_loss")
    loss, wt = _weighted_nll(logp, t, weight, axis, "nll_loss")
    return _reduce_weighted(loss, wt, reduction)


def cross_entropy(input: Any, target: Any, weight: Any | None = None, *,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between logits ``input`` (N, C, ...) and class indices (N, ...) or class
    probabilities (N, C, ...); ``weight`` rescales each class and ``label_smoothing`` mixes in
    the uniform distribution, both as in PyTorch."""
    x = float_tensor(input, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise error(OpError, f"label_smoothing must be in [0, 1], got {label_smoothing}")
    axis = _class_axis(x, "cross_entropy")
    logp = x.log_softmax(axis)
    c = x.shape[axis]
    w = None if weight is None else _class_weight(weight, x, axis, "cross_entropy")
    wshape = [c if i == axis else 1 for i in range(x.ndim)]
    wlogp = logp if w is None else logp * w.reshape(wshape)
    t = target if isinstance(target, Tensor) else as_tensor(target)
    if t.dtype.is_float:
        t = t.to(x.dtype)
        _same_shape(x, t, "cross_entropy with class probabilities")
        if label_smoothing:
            n = _static_classes(x, axis)
            t = t * const(1.0 - label_smoothing, x) + const(label_smoothing / n, x)
        return _reduce(-(t * wlogp).sum(axis), reduction)
    t = _indices(t, "cross_entropy")
    loss, wt = _weighted_nll(logp, t, w, axis, "cross_entropy")
    if label_smoothing:
        smooth = -wlogp.sum(axis) * const(1.0 / _static_classes(x, axis), x)
        loss = loss * const(1.0 - label_smoothing, x) + smooth * const(label_smoothing, x)
    return _reduce_weighted(loss, wt, reduction)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any | None = None, *,
                                     reduction: str = "mean",
                                     pos_weight: Any | None = None) -> Tensor:
    """Sigmoid + binary cross-entropy in the stable form
    ``max(x, 0) - x·y + log(1 + e^-|x|)``; ``weight`` rescales each element and
    ``pos_weight`` the positive term."""
    x = float_tensor(input, "binary_cross_entropy_with_logits")
    y = _target(target, x).to(x.dtype)
    _same_shape(x, y, "binary_cross_entropy_with_logits")
    soft = Tensor(ops.softplus((-x.abs()).value))
    if pos_weight is None:
        loss = x.relu() - x * y + soft
    else:
        pw = _target(pos_weight, x)
        log_weight = (pw - const(1.0, x)) * y + const(1.0, x)
        loss = (const(1.0, x) - y) * x + log_weight * (soft + (-x).relu())
    if weight is not None:
        loss = loss * _target(weight, x)
    return _reduce(loss, reduction)


def binary_cross_entropy(input: Any, target: Any, weight: Any | None = None, *,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities; logs are clamped at -100 as in PyTorch."""
    p = float_tensor(input, "binary_cross_entropy")
    y = _target(target, p).to(p.dtype)
    _same_shape(p, y, "binary_cross_entropy")
    one = const(1.0, p)
    log_p = p.log().clamp(min=-100.0)
    log_q = (one - p).log().clamp(min=-100.0)
    loss = -(y * log_p + (one - y) * log_q)
    if weight is not None:
        loss = loss * _target(weight, p)
    return _reduce(loss, reduction)


def _distance(a: Tensor, b: Tensor, p: float, eps: float) -> Tensor:
    """``||a - b + eps||_p`` over the last dim (``torch.nn.functional.pairwise_distance``)."""
    diff = a - b + const(eps, a)
    if p == 2.0:
        return (diff * diff).sum(-1).sqrt()
    d = diff.abs()
    if p == 1.0:
        return d.sum(-1)
    return (d ** const(p, d)).sum(-1) ** const(1.0 / p, d)


def pairwise_distance(x1: Any, x2: Any, *, p: float = 2.0, eps: float = 1e-6,
                      keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` along the last dim, as ``torch.nn.functional.pairwise_distance``
    (the ``eps`` keeps the gradient of the 2-norm finite when ``x1 == x2``)."""
    a = float_tensor(x1, "pairwise_distance")
    b = _target(x2, a)
    _same_shape(a, b, "pairwise_distance")
    if a.ndim == 0:
        raise error(ShapeError, f"pairwise_distance expects vectors (..., D), got {a.type}")
    if not p > 0:
        raise error(OpError, f"pairwise_distance: p must be > 0, got {p}")
    d = _distance(a, b, p, eps)
    return d.unsqueeze(-1) if keepdim else d


def contrastive_loss(x1: Any, x2: Any, target: Any, *, margin: float = 1.0, eps: float = 1e-6,
                     reduction: str = "mean") -> Tensor:
    """The margin contrastive loss of Siamese networks (Hadsell, Chopra and LeCun 2006) on
    pairs of embeddings (N, D) with ``target`` (N,) 1 for a matching pair, 0 otherwise:
    ``y·d²/2 + (1 - y)·max(0, margin - d)²/2``, ``d`` the Euclidean pairwise distance (with
    ``eps`` as in :func:`pairwise_distance`). Matching pairs are pulled together; others are
    pushed apart until they are ``margin`` away, then they cost nothing."""
    a = float_tensor(x1, "contrastive_loss")
    b = _target(x2, a)
    _same_shape(a, b, "contrastive_loss (x2)")
    if a.ndim not in (1, 2):
        raise error(ShapeError, f"contrastive_loss expects (N, D) or (D,) embeddings, got "
                    f"{a.type}")
    y = _target(target, a).to(a.dtype)
    if y.shape != a.shape[:-1]:
        raise error(ShapeError, f"contrastive_loss: target {y.type} should have shape "
                    f"{list(a.shape[:-1])}, one 0/1 label per pair of embeddings {a.type}")
    if not margin > 0:
        raise error(OpError, f"contrastive_loss: margin must be > 0, got {margin}")
    diff = a - b + const(eps, a)
    sq = (diff * diff).sum(-1)  # d² directly: no square root on matching pairs
    push = (const(margin, a) - sq.sqrt()).relu()
    half = const(0.5, a)
    return _reduce(half * (y * sq + (const(1.0, a) - y) * push * push), reduction)


def triplet_margin_loss(anchor: Any, positive: Any, negative: Any, *, margin: float = 1.0,
                        p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                        reduction: str = "mean") -> Tensor:
    """The book's contrastive loss on triplets (section 3.1), as in PyTorch:
    ``max(0, margin + d(anchor, positive) - d(anchor, negative))`` with ``d`` the p-norm
    distance along the last dim; ``swap`` uses ``min(d(a, n), d(p, n))`` as the negative
    distance (Balntas et al. 2016). Zero once every negative is ``margin`` farther than its
    positive."""
    a = float_tensor(anchor, "triplet_margin_loss")
    pos, neg = _target(positive, a), _target(negative, a)
    _same_shape(a, pos, "triplet_margin_loss (positive)")
    _same_shape(a, neg, "triplet_margin_loss (negative)")
    if a.ndim not in (1, 2):
        raise error(ShapeError, f"triplet_margin_loss expects (N, D) or (D,) embeddings, got "
                    f"{a.type}")
    if not p > 0:
        raise error(OpError, f"triplet_margin_loss: p must be > 0, got {p}")
    d_pos, d_neg = _distance(a, pos, p, eps), _distance(a, neg, p, eps)
    if swap:
        d_neg = d_neg.minimum(_distance(pos, neg, p, eps))
    return _reduce((d_pos - d_neg + const(margin, a)).relu(), reduction)


def _unit(x: Tensor, eps: float = 1e-12) -> Tensor:
    return x / (x * x).sum(-1, keepdim=True).sqrt().clamp(min=eps)


def info_nce(query: Any, key: Any, temperature: Any = 0.07, *, normalize: bool = True,
             symmetric: bool = True, reduction: str = "mean") -> Tensor:
    """InfoNCE (van den Oord et al. 2018), the contrastive loss of CLIP (book section 6.6) and
    SimCLR, on N pairs of embeddings ``query`` (N, D) and ``key`` (N, D): the i-th query
    matches the i-th key and the other N - 1 keys of the batch are its negatives.

    ``logits = q @ k.T / temperature`` (q, k L2-normalised when ``normalize``: cosine
    similarities), then the cross-entropy of every row with its diagonal entry as the target;
    ``symmetric`` averages it with the column-wise (key -> query) cross-entropy, as CLIP does.
    ``temperature`` may be a float or a scalar Tensor, e.g. ``log_t.exp()`` of a learned
    parameter. With ``reduction="none"`` the result is the (N,) loss of each pair.
    """
    q = float_tensor(query, "info_nce")
    k = _target(key, q)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise error(ShapeError, f"info_nce expects (N, D) query and key embeddings, got "
                    f"{q.type} and {k.type}")
    if isinstance(q.shape[0], int) and isinstance(k.shape[0], int) and q.shape[0] != k.shape[0]:
        raise error(ShapeError, f"info_nce: {q.shape[0]} queries but {k.shape[0]} keys; each "
                    "query needs its matching key")
    if normalize:
        q, k = _unit(q), _unit(k)
    t = temperature if isinstance(temperature, Tensor) else const(temperature, q)
    logits = (q @ k.T) / t
    rows = Tensor(ops.iota_like(logits.value, axis=0))
    eye = (rows == Tensor(ops.iota_like(logits.value, axis=1))).to(q.dtype)
    loss = -(logits.log_softmax(-1) * eye).sum(-1)
    if symmetric:
        loss = (loss - (logits.log_softmax(0) * eye).sum(0)) * const(0.5, q)
    return _reduce(loss, reduction)
