"""Optimizers, learning-rate schedules and gradient clipping as graph ops.

Everything here builds nodes in the active :class:`~lbdl_graph.builder.GraphBuilder`, so the
update is part of the compiled training step and runs on every backend. ``step`` is the int64
step counter *before* this update (0 for the first step), matching PyTorch's bias correction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import OpError
from lbdl_graph.graph import Value

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineLR",
    "Optimizer",
    "Schedule",
    "StepLR",
    "WarmupLR",
    "clip_by_global_norm",
]


def _const(x: float, like: Value) -> Value:
    return ops.constant(value=np.asarray(x, dtype=like.type.dtype.numpy))


def _f32(x: float) -> Value:
    return ops.constant(value=np.asarray(x, dtype=np.float32))


# ---------------------------------------------------------------- schedules


class Schedule:
    """A learning rate as a function of the int64 step counter, built as graph ops."""

    def __call__(self, step: Value) -> Value:
        """The f32 scalar learning rate at ``step``."""
        raise NotImplementedError

    def value(self, step: int) -> float:
        """The same schedule evaluated in Python (for tests and progress bars)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantLR(Schedule):
    """A fixed learning rate."""

    lr: float

    def __call__(self, step: Value) -> Value:
        return _f32(self.lr)

    def value(self, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepLR(Schedule):
    """lr * gamma ** (step // step_size)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __call__(self, step: Value) -> Value:
        k = ops.cast(ops.div(step, ops.constant(value=np.int64(self.step_size))), to="f32")
        return ops.mul(_f32(self.lr), ops.pow_(_f32(self.gamma), k))

    def value(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class CosineLR(Schedule):
    """Cosine decay from lr to min_lr over total_steps, then min_lr."""

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __call__(self, step: Value) -> Value:
        t = ops.minimum(ops.cast(step, to="f32"), _f32(float(self.total_steps)))
        phase = ops.mul(t, _f32(math.pi / self.total_steps))
        half = ops.mul(ops.add(ops.cos(phase), _f32(1.0)), _f32(0.5 * (self.lr - self.min_lr)))
        return ops.add(half, _f32(self.min_lr))

    def value(self, step: int) -> float:
        t = min(step, self.total_steps)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t /
                                                                            self.total_steps))


@dataclass(frozen=True)
class WarmupLR(Schedule):
    """Linear warm-up over warmup_steps (from lr/warmup_steps up to the inner schedule)."""

    inner: Schedule
    warmup_steps: int

    def __call__(self, step: Value) -> Value:
        ramp = ops.div(ops.add(ops.cast(step, to="f32"), _f32(1.0)),
                       _f32(float(self.warmup_steps)))
        return ops.mul(self.inner(step), ops.minimum(ramp, _f32(1.0)))

    def value(self, step: int) -> float:
        return self.inner.value(step) * min((step + 1) / self.warmup_steps, 1.0)


def as_schedule(lr: float | Schedule) -> Schedule:
    """A schedule from a float (constant) or a schedule."""
    return lr if isinstance(lr, Schedule) else ConstantLR(float(lr))


# ---------------------------------------------------------------- clipping


def clip_by_global_norm(grads: Mapping[str, Value], max_norm: float
                        ) -> tuple[dict[str, Value], Value]:
    """Scale all gradients by min(1, max_norm / (||g|| + 1e-6)) (torch.nn.utils.clip_grad_norm_).

    Returns the clipped gradients and the global norm before clipping.
    """
    sq = [ops.reduce_sum(ops.mul(g, g), axes=None, keepdims=False) for g in grads.values()]
    total = sq[0]
    for s in sq[1:]:
        total = ops.add(total, s)
    norm = ops.sqrt(total)
    coef = ops.minimum(ops.div(_f32(max_norm), ops.add(norm, _f32(1e-6))), _f32(1.0))
    return {k: ops.mul(g, ops.cast(coef, to=g.type.dtype)) for k, g in grads.items()}, norm


# ---------------------------------------------------------------- optimizers


class Optimizer:
    """Base class: per-parameter state slots and an update rule built from graph ops."""

    lr: float | Schedule
    # True when ``update`` is elementwise in (p, g, slots) with scalar step and lr: then the
    # updates of several parameters may run as one over their concatenation (fused_update.py)
    elementwise: bool = False

    def slots(self) -> Sequence[str]:
        """Names of the per-parameter state tensors (each has the parameter's shape)."""
        return ()

    def init_state(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Initial optimizer state, keyed ``opt.<slot>/<param>``."""
        return {f"opt.{s}/{name}": np.zeros_like(p) for name, p in params.items()
                for s in self.slots()}

    def update(self, p: Value, g: Value, state: Mapping[str, Value], step: Value, lr: Value
               ) -> tuple[Value, dict[str, Value]]:
        """New parameter and new state slots for one parameter."""
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Optimizer):
    """SGD with optional momentum, Nesterov and L2 weight decay (PyTorch semantics)."""

    lr: float | Schedule = 0.01
    momentum: float = 0.0
    elementwise = True
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.nesterov and self.momentum <= 0:
            raise OpError("SGD: nesterov needs momentum > 0")

    def slots(self) -> Sequence[str]:
        return ("momentum",) if self.momentum else ()

    def update(self, p: Value, g: Value, state: Mapping[str, Value], step: Value, lr: Value
               ) -> tuple[Value, dict[str, Value]]:
        # g += wd * p ; buf = mu * buf + g ; d = g + mu * buf (nesterov) or buf ; p -= lr * d
        if self.weight_decay:
            g = ops.add(g, ops.mul(_const(self.weight_decay, p), p))
        new_state: dict[str, Value] = {}
        d = g
        if self.momentum:
            buf = ops.add(ops.mul(_const(self.momentum, p), state["momentum"]), g)
            new_state["momentum"] = buf
            d = ops.add(g, ops.mul(_const(self.momentum, p), buf)) if self.nesterov else buf
        return ops.sub(p, ops.mul(ops.cast(lr, to=p.type.dtype), d)), new_state


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 on the gradient (torch.optim.Adam)."""

    lr: float | Schedule = 1e-3
    beta1: float = 0.9
    elementwise = True
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False  # AdamW: decay the weights directly, not through the gradient

    def slots(self) -> Sequence[str]:
        return ("m", "v")

    def update(self, p: Value, g: Value, state: Mapping[str, Value], step: Value, lr: Value
               ) -> tuple[Value, dict[str, Value]]:
        # m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
        # p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)      (torch's formulation)
        # computed as p -= (lr sqrt(1-b2^t) / (1-b1^t)) * m / (sqrt(v) + eps sqrt(1-b2^t)):
        # the same up to rounding, with the bias corrections on scalars (one pass over the
        # parameter fewer)
        dt = p.type.dtype
        lr_p = ops.cast(lr, to=dt)
        if self.weight_decay and not self.decoupled:
            g = ops.add(g, ops.mul(_const(self.weight_decay, p), p))
        m = ops.add(ops.mul(_const(self.beta1, p), state["m"]),
                    ops.mul(_const(1 - self.beta1, p), g))
        v = ops.add(ops.mul(_const(self.beta2, p), state["v"]),
                    ops.mul(_const(1 - self.beta2, p), ops.mul(g, g)))
        t = ops.cast(ops.add(step, ops.constant(value=np.int64(1))), to=dt)
        bc1 = ops.sub(_const(1.0, p), ops.pow_(_const(self.beta1, p), t))
        bc2 = ops.sub(_const(1.0, p), ops.pow_(_const(self.beta2, p), t))
        root_bc2 = ops.sqrt(bc2)
        denom = ops.add(ops.sqrt(v), ops.mul(_const(self.eps, p), root_bc2))
        step_size = ops.div(ops.mul(lr_p, root_bc2), bc1)
        new_p = ops.sub(p, ops.mul(step_size, ops.div(m, denom)))
        if self.weight_decay and self.decoupled:
            new_p = ops.sub(new_p, ops.mul(ops.mul(lr_p, _const(self.weight_decay, p)), p))
        return new_p, {"m": m, "v": v}


def AdamW(lr: float | Schedule = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.01) -> Adam:
    """Adam with decoupled weight decay (torch.optim.AdamW defaults)."""
    return Adam(lr, beta1, beta2, eps, weight_decay, decoupled=True)
