"""VJP of ``scan`` as a reverse scan, so it works at a symbolic length.

For ``scan(s0, xs, caps)`` with body ``f(s, x, c) -> (s', y)``:

1. the per-step states ``S[t]`` (the carries) are read from the forward node when its body
   returns each state it is given as a slice output too (the DSL's recurrent layers do so in
   training mode); otherwise a second forward scan, whose body returns them, stacks them;
2. a reverse scan walks the steps backwards over ``(x[t], S[t], dY[t])``, carrying the state
   cotangent ``ds`` and one accumulator ``dc`` per capture; its body re-runs ``f`` on the
   step's inputs and backpropagates through it (the VJP rules of the body's ops, emitted into
   the body), returning ``(ds_t, dc + dc_t, dx_t)``; ``dx`` is stacked in the input's order.

Neither scan needs the length, so gradients of a symbolic-length scan are graphs of the same
size at every length. The reverse body re-runs the cell forward once per step (as the unrolled
VJP re-emits it); without stored carries the second forward scan adds one more forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.graph import Graph, Value
from lbdl_graph.ops.control import scan_layout
from lbdl_graph.shapes import normalize_axis

from .driver import active_values, backprop
from .helpers import inline_body, zeros_like
from .table import VJPS

__all__: list[str] = []

Grads = tuple[Value | None, ...]


def _or_zeros(ct: dict[Value, Value], v: Value) -> Value:
    got = ct.get(v)
    return got if got is not None else zeros_like(v)


def _carries_body(body: Graph, n_states: int) -> Graph:
    """The body returning its new states and, as slice outputs, the states it was given."""
    b = GraphBuilder.from_graph(body)
    return b.build([*body.outputs[:n_states], *body.inputs[:n_states]],
                   name=f"{body.name}_carries", prune=True)


def _stored_carries(body: Graph, n_states: int, outs: Sequence[Value], out_axes: Sequence[int],
                    out_dirs: Sequence[int]) -> list[tuple[Value, int, int]] | None:
    """Per state: the forward output stacking the states entering each step, its axis and the
    direction the reverse scan reads it in; None unless the body returns every state so."""
    ys = body.outputs[n_states:]
    found = []
    for state in body.inputs[:n_states]:
        k = next((k for k, y in enumerate(ys) if y is state), None)
        if k is None:
            return None
        found.append((outs[n_states + k], out_axes[k], 1 - out_dirs[k]))
    return found


def _backward_body(body: Graph, n_states: int, n_x: int, with_dy: Sequence[bool]) -> Graph:
    """The reverse step: ``(ds, dc, x_t, s_t, dy_t, caps) -> (ds_t, dc + dc_t, dx_t)``."""
    states = body.inputs[:n_states]
    slices = body.inputs[n_states:n_states + n_x]
    caps = body.inputs[n_states + n_x:]
    fs = [v for v in states if v.dtype.is_float]
    fc = [v for v in caps if v.dtype.is_float]
    outs_y = body.outputs[n_states:]
    bb = GraphBuilder(f"{body.name}_grad")
    taken: set[str] = set()

    def entry(name: str, like: Value) -> Value:
        fresh, i = name, 0
        while fresh in taken:  # a gradient body differentiated again reuses names
            i += 1
            fresh = f"{name}_{i}"
        taken.add(fresh)
        return bb.input(fresh, like.dtype, like.shape)

    d_s = [entry(f"d_{v.name}", v) for v in fs]
    d_c = [entry(f"acc_{v.name}", v) for v in fc]
    x_t = [entry(v.name, v) for v in slices]
    s_t = [entry(v.name, v) for v in states]
    dy_t = [entry(f"d_{v.name}", v) for v, keep in zip(outs_y, with_dy, strict=True) if keep]
    c_in = [entry(v.name, v) for v in caps]
    with bb:
        start = len(bb.nodes)
        res = inline_body(body, [*s_t, *x_t, *c_in])
        inner = bb.nodes[start:]
        seeds: dict[Value, Value] = {}
        pairs = list(zip([res[i] for i, v in enumerate(states) if v.dtype.is_float], d_s,
                         strict=True))
        pairs += list(zip([y for y, keep in zip(res[n_states:], with_dy, strict=True) if keep],
                          dy_t, strict=True))
        for o, g in pairs:
            seeds[o] = ops.add(seeds[o], g) if o in seeds else g
        sources = [v for v in [*s_t, *x_t, *c_in] if v.dtype.is_float]
        ct = backprop(inner, seeds, active_values(inner, sources))
        new_ds = [_or_zeros(ct, v) for v in s_t if v.dtype.is_float]
        new_dc = [ops.add(acc, ct[v]) if v in ct else acc
                  for acc, v in zip(d_c, [c for c in c_in if c.dtype.is_float], strict=True)]
        dx = [_or_zeros(ct, v) for v in x_t if v.dtype.is_float]
    return bb.build([*new_ds, *new_dc, *dx])


@VJPS.register(ops.scan)
def _scan_vjp(gs: tuple[Value | None, ...], outs: tuple[Value, ...], *operands: Value,
              body: Graph, num_scan_inputs: int, num_captures: int, **layout: Any) -> Grads:
    n_states = len(operands) - num_scan_inputs - num_captures
    s0 = operands[:n_states]
    xs = operands[n_states:n_states + num_scan_inputs]
    caps = operands[n_states + num_scan_inputs:]
    n_out = len(body.outputs) - n_states
    in_axes, in_dirs, out_axes, out_dirs = scan_layout(num_scan_inputs, n_out, layout)
    in_axes = [normalize_axis(a, x.ndim) for a, x in zip(in_axes, xs, strict=True)]
    out_axes = [normalize_axis(a, o.ndim) for a, o in zip(out_axes, outs[n_states:],
                                                          strict=True)]
    stored = _stored_carries(body, n_states, outs, out_axes, out_dirs)
    if stored is None:
        stored = []
        if n_states:
            fwd = ops.scan(*s0, *xs, *caps, body=_carries_body(body, n_states),
                           num_scan_inputs=num_scan_inputs, num_captures=num_captures,
                           scan_input_axes=in_axes, scan_input_directions=in_dirs,
                           name="carries")
            stored = [(v, 0, 1) for v in fwd[n_states:]]
    g_y = list(gs[n_states:])
    with_dy = [g is not None for g in g_y]
    bwd = _backward_body(body, n_states, num_scan_inputs, with_dy)
    float_s = [i for i, v in enumerate(s0) if v.dtype.is_float]
    float_c = [i for i, v in enumerate(caps) if v.dtype.is_float]
    float_x = [i for i, v in enumerate(xs) if v.dtype.is_float]
    init_ds = [gs[i] if gs[i] is not None else zeros_like(outs[i]) for i in float_s]
    init_dc = [zeros_like(caps[i]) for i in float_c]
    dys = [g for g in g_y if g is not None]
    scan_in = [*xs, *(v for v, _, _ in stored), *dys]
    axes_in = [*in_axes, *(a for _, a, _ in stored),
               *(a for a, k in zip(out_axes, with_dy, strict=True) if k)]
    dirs_in = [*(1 - d for d in in_dirs), *(d for _, _, d in stored),
               *(1 - d for d, k in zip(out_dirs, with_dy, strict=True) if k)]
    res = ops.scan(*init_ds, *init_dc, *scan_in, *caps, body=bwd, num_scan_inputs=len(scan_in),
                   num_captures=len(caps), scan_input_axes=axes_in,
                   scan_input_directions=dirs_in,
                   scan_output_axes=[in_axes[i] for i in float_x],
                   scan_output_directions=[1 - in_dirs[i] for i in float_x], name="reverse")
    grads: list[Value | None] = [None] * len(operands)
    k = 0
    for i in float_s:
        grads[i] = res[k]
        k += 1
    for i in float_c:
        grads[n_states + num_scan_inputs + i] = res[k]
        k += 1
    for i in float_x:
        grads[n_states + i] = res[k]
        k += 1
    return tuple(grads)
