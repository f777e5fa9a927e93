"""NumPy kernels of the control-flow ops (ONNX If, Loop and Scan semantics).

A body is run by its own :class:`~lbdl_graph.backends.numpy.interpreter.Interpreter`, compiled
once per body graph and cached for as long as the graph lives. Captures arrive as operands, so
a kernel passes them to the body like any other input. The outer interpreter passes its mode
(``training``), so a dropout inside a body is the identity in evaluation mode.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import ExecutionError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.ops.control import scan_layout

from . import KERNELS

if TYPE_CHECKING:
    from ..interpreter import Interpreter

__all__: list[str] = []

Array = np.ndarray
_BODIES: weakref.WeakKeyDictionary[Graph, dict[bool, Interpreter]] = \
    weakref.WeakKeyDictionary()


def body_interpreter(graph: Graph, training: bool = True) -> Interpreter:
    """The cached interpreter of a body graph in one mode (verified when the outer graph was)."""
    modes = _BODIES.setdefault(graph, {})
    interp = modes.get(training)
    if interp is None:
        from ..interpreter import Interpreter

        interp = Interpreter(graph, verify_graph=False, training=training)
        modes[training] = interp
    return interp


def _flag(x: Array, what: str) -> bool:
    if x.size != 1:
        raise ExecutionError(f"{what} must hold one element, got shape {list(x.shape)}")
    return bool(x.reshape(-1)[0])


def _stack(parts: list[Array], like: Value, what: str) -> Array:
    """Stack per-iteration outputs on a new axis 0 (an empty stack needs a static slice)."""
    if parts:
        return np.stack(parts, axis=0)
    if not all(isinstance(d, int) for d in like.shape):
        raise ExecutionError(f"{what}: zero iterations, and the slice type {like.type} has "
                             "symbolic dims, so the empty result has no shape")
    return np.zeros((0, *like.shape), dtype=like.dtype.numpy)


@KERNELS.register(ops.if_)
def _if_kernel(cond: Array, *captures: Array, then_branch: Graph,
               else_branch: Graph, training: bool = True) -> tuple[Array, ...]:
    """Run the branch that ``cond`` picks on the captures."""
    branch = then_branch if _flag(cond, "if: cond") else else_branch
    return tuple(body_interpreter(branch, training).run_positional(list(captures)))


@KERNELS.register(ops.loop)
def _loop_kernel(trip_count: Array | None, cond: Array | None, *operands: Array, body: Graph,
                 num_carried: int, trip_dim: Any, training: bool = True) -> tuple[Array, ...]:
    """ONNX Loop: iterate while ``i < trip_count`` (if given) and ``cond`` (if given)."""
    carried = list(operands[:num_carried])
    captures = list(operands[num_carried:])
    trips = None if trip_count is None else int(np.asarray(trip_count).reshape(-1)[0])
    go = True if cond is None else _flag(cond, "loop: cond")
    interp = body_interpreter(body, training)
    n_scan = len(body.outputs) - 1 - num_carried
    scans: list[list[Array]] = [[] for _ in range(n_scan)]
    i = 0
    while go and (trips is None or i < trips):
        out = interp.run_positional([np.asarray(i, dtype=np.int64), np.asarray(go), *carried,
                                     *captures])
        go = _flag(out[0], "loop body: cond output")
        carried = out[1:1 + num_carried]
        for k, y in enumerate(out[1 + num_carried:]):
            scans[k].append(y)
        i += 1
    stacked = [_stack(p, v, "loop") for p, v in zip(scans, body.outputs[1 + num_carried:],
                                                     strict=True)]
    return (*carried, *stacked)


@KERNELS.register(ops.scan)
def _scan_kernel(*operands: Array, body: Graph, num_scan_inputs: int, num_captures: int,
                 training: bool = True, **layout: Any) -> tuple[Array, ...]:
    """ONNX Scan: fold the body over slices of the scan inputs, carrying the states."""
    n_states = len(operands) - num_scan_inputs - num_captures
    states = list(operands[:n_states])
    captures = list(operands[n_states + num_scan_inputs:])
    n_out = len(body.outputs) - n_states
    in_axes, in_dirs, out_axes, out_dirs = scan_layout(num_scan_inputs, n_out, layout)
    xs = []
    for x, ax, d in zip(operands[n_states:n_states + num_scan_inputs], in_axes, in_dirs,
                        strict=True):
        x = np.moveaxis(x, ax, 0)
        xs.append(x[::-1] if d else x)
    length = xs[0].shape[0]
    if any(x.shape[0] != length for x in xs):
        raise ExecutionError(f"scan: the scan inputs have lengths {[x.shape[0] for x in xs]}")
    interp = body_interpreter(body, training)
    ys: list[list[Array]] = [[] for _ in range(n_out)]
    for t in range(length):
        out = interp.run_positional([*states, *(x[t] for x in xs), *captures])
        states = out[:n_states]
        for k, y in enumerate(out[n_states:]):
            ys[k].append(y)
    results = []
    for parts, v, ax, d in zip(ys, body.outputs[n_states:], out_axes, out_dirs, strict=True):
        y = _stack(parts, v, "scan")
        y = y[::-1] if d else y
        results.append(np.ascontiguousarray(np.moveaxis(y, 0, ax)))
    return (*states, *results)
