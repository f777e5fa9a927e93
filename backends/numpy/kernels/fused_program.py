"""The NumPy kernel of ``fused_elementwise``: its program run over a register file.

Each step of the program (op name, argument registers, attributes) runs the op's kernel, except
that float32/float64 steps with a NumPy ufunc (or an in-place relu, sigmoid or GELU) write into a
dead buffer of the result's shape instead of allocating: one of their own operands when it dies
at that step, or a buffer freed earlier in the program or left over from the previous call. The
compiled program (kernels, fast paths, last uses) is cached per program object.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from lbdl_graph import ops
from lbdl_graph.opdef import OPS

from . import KERNELS
from .fused import _NATIVE, _SCRATCH, _SCRATCH_MAX, _gelu_erf_, _gelu_tanh_, _relu_, _sigmoid_

__all__: list[str] = []

Array = np.ndarray

# ops whose NumPy ufunc has the IR semantics on float32/float64: (ufunc, result is bool)
_UFUNCS: dict[str, tuple[Any, bool]] = {
    "add": (np.add, False), "sub": (np.subtract, False), "mul": (np.multiply, False),
    "div": (np.divide, False), "maximum": (np.maximum, False), "minimum": (np.minimum, False),
    "neg": (np.negative, False), "abs": (np.abs, False), "exp": (np.exp, False),
    "log": (np.log, False), "sqrt": (np.sqrt, False), "reciprocal": (np.reciprocal, False),
    "sin": (np.sin, False), "cos": (np.cos, False), "tanh": (np.tanh, False),
    "erf": (special.erf, False), "floor": (np.floor, False),
    "ceil": (np.ceil, False), "round": (np.rint, False), "pow": (np.power, False),
    "equal": (np.equal, True), "less": (np.less, True), "less_equal": (np.less_equal, True),
    "greater": (np.greater, True), "greater_equal": (np.greater_equal, True),
}
_BOOL = np.dtype(bool)


@dataclass(frozen=True, slots=True)
class _Step:
    kernel: Callable[..., Any] | None  # the op's kernel with its attributes; None: a constant
    ufunc: Any  # the in-place fast path (None: always the kernel)
    to_bool: bool  # the fast path's result is bool
    act: Callable[[Array], None] | None  # in-place relu/gelu fast path
    fast: bool  # has a fast path (ufunc or act)
    args: tuple[int, ...]
    dies: tuple[int, ...]  # registers last read by this step
    value: Array | None  # the constant's data


def _compile(program: Sequence[Any], n_inputs: int) -> list[_Step]:
    """Resolve each step's kernel and fast path, and where each register is last read."""
    last: dict[int, int] = {}
    for i, (_, args, _) in enumerate(program):
        for a in args:
            last[a] = i
    steps: list[_Step] = []
    for i, (name, args, attr_items) in enumerate(program):
        op = OPS[name]
        attrs = op.check_attrs(dict(attr_items))
        dies = tuple(sorted({a for a in args if last[a] == i and a >= n_inputs}))
        if op is ops.constant:
            steps.append(_Step(None, None, False, None, False, (), dies,
                               np.asarray(attrs["value"])))
            continue
        kernel = KERNELS[op]
        ufunc, to_bool = _UFUNCS.get(name, (None, False))
        act = {ops.relu: _relu_, ops.sigmoid: _sigmoid_}.get(op)
        if op is ops.gelu and attrs["approximate"] in ("none", "tanh"):
            act = _gelu_tanh_ if attrs["approximate"] == "tanh" else _gelu_erf_
        bound = functools.partial(kernel, **attrs) if attrs else kernel
        steps.append(_Step(bound, ufunc, to_bool, act, ufunc is not None or act is not None,
                           tuple(args), dies, None))
    return steps


_PLANS: OrderedDict[int, tuple[Any, list[_Step]]] = OrderedDict()
_MAX_PLANS = 256


def _plan(program: Any, n_inputs: int) -> list[_Step]:
    """The compiled program, cached by identity (a node's program object is reused each run)."""
    hit = _PLANS.get(id(program))
    if hit is not None and hit[0] is program:
        _PLANS.move_to_end(id(program))
        return hit[1]
    steps = _compile(program, n_inputs)
    _PLANS[id(program)] = (program, steps)
    if len(_PLANS) > _MAX_PLANS:
        _PLANS.popitem(last=False)
    return steps


def _take(pool: list[Array], shape: tuple[int, ...], dt: np.dtype[Any]) -> Array | None:
    """A free buffer of this shape and dtype from the pool, if any."""
    for i, buf in enumerate(pool):
        if buf.shape == shape and buf.dtype == dt:
            return pool.pop(i)
    return None


_SPARES = 8  # dead buffers a thread keeps for its next fused_elementwise
_SMALL = 1 << 13  # operands below this many elements run the plain kernels, no buffer reuse


@KERNELS.register(ops.fused_elementwise)
def _fused_elementwise_kernel(*xs: Array, program: Any) -> Array:
    """Run the program over a register file. Float32/64 steps with a ufunc write into a dead
    buffer of the right shape (one of their own operands when it dies here, or one left over
    from the previous call) instead of allocating; buffers the kernel did not allocate itself
    are never written. (Running it on row blocks that stay in cache was measured: the Python
    cost per step and block outweighs the cache gain.)"""
    steps = _plan(program, len(xs))
    if max((x.size for x in xs), default=0) < _SMALL:  # bookkeeping would cost more than it saves
        regs: list[Any] = list(xs)
        for step in steps:
            regs.append(step.value if step.kernel is None
                        else step.kernel(*[regs[a] for a in step.args]))
        return np.asarray(regs[-1])
    regs = [*xs, *[None] * len(steps)]
    owned = [False] * len(regs)  # allocated here and referenced by this register only
    pool: list[Array] = getattr(_SCRATCH, "spares", [])
    _SCRATCH.spares = []
    r = len(xs)
    for step in steps:
        if step.kernel is None:
            res = step.value
        else:
            vals = [regs[a] for a in step.args]
            shape = _fast_shape(vals) if step.fast else None
            if shape is not None:
                res = _fast_step(step, vals, shape, regs, owned, pool)
                owned[r] = True
            else:
                res = np.asarray(step.kernel(*vals))
                for a in step.args:  # the result may be a view of an owned operand
                    if owned[a] and np.may_share_memory(res, regs[a]):
                        owned[a] = False
        regs[r] = res
        for d in step.dies:
            if owned[d] and regs[d] is not res:
                pool.append(regs[d])
            owned[d] = False
            regs[d] = None
        r += 1
    _SCRATCH.spares = [b for b in pool if b.size <= _SCRATCH_MAX][-_SPARES:]
    return np.asarray(regs[-1])


def _fast_shape(vals: list[Any]) -> tuple[int, ...] | None:
    """The result shape if the operands suit the fast path (float32/64 arrays of one dtype)."""
    v0 = vals[0]
    if type(v0) is not np.ndarray or v0.dtype not in _NATIVE:
        return None
    shape = v0.shape
    for a in vals[1:]:
        if type(a) is not np.ndarray or a.dtype != v0.dtype:
            return None
        if a.shape != shape:
            shape = np.broadcast_shapes(shape, a.shape)
    return shape


def _fast_step(step: _Step, vals: list[Array], shape: tuple[int, ...], regs: list[Any],
               owned: list[bool], pool: list[Array]) -> Array:
    dt = _BOOL if step.to_bool else vals[0].dtype
    out = None
    for a in step.dies:  # an operand that dies here, of the same shape and dtype
        buf = regs[a]
        if owned[a] and buf.shape == shape and buf.dtype == dt:
            out, owned[a] = buf, False
            break
    if out is None and pool:
        out = _take(pool, shape, dt)
    if step.act is not None:
        if out is None:
            out = np.array(vals[0], copy=True)
        elif out is not vals[0]:
            np.copyto(out, vals[0])
        step.act(out)
        return out
    if out is None:
        return np.asarray(step.ufunc(*vals))
    return step.ufunc(*vals, out=out)
