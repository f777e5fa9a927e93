"""ONNX RNN, GRU and LSTM, unrolled over a static sequence length.

The input projections of all time steps are one matmul; each step then adds the recurrent
projection, applies the gate activations and updates the state. ``sequence_lens`` masks the
steps past each sequence's end (the state is kept and Y is 0 there), and the reverse direction
reverses each sequence's valid prefix with a gather, as the ONNX specification defines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.graph import Value

from .context import NodeCtx, handles

Act = Callable[[Value], Value]
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


def _activation(n: NodeCtx, name: str, alpha: float | None, beta: float | None) -> Act:
    def sc(v: float, like: Value) -> Value:
        return n.scalar(v, like)

    def act(x: Value) -> Value:
        key = name.lower()
        if key in ("sigmoid", "tanh", "relu", "softplus"):
            op = {"sigmoid": ops.sigmoid, "tanh": ops.tanh, "relu": ops.relu,
                  "softplus": ops.softplus}[key]
            return n.emit(op, x)
        if key == "leakyrelu":
            return n.emit(ops.leaky_relu, x, alpha=alpha if alpha is not None else 0.01)
        if key == "affine":
            return n.emit(ops.add, n.emit(ops.mul, x, sc(alpha or 1.0, x)), sc(beta or 0.0, x))
        if key == "scaledtanh":
            t = n.emit(ops.tanh, n.emit(ops.mul, x, sc(beta or 1.0, x)))
            return n.emit(ops.mul, t, sc(alpha or 1.0, x))
        if key == "hardsigmoid":
            y = n.emit(ops.add, n.emit(ops.mul, x, sc(alpha if alpha is not None else 0.2, x)),
                       sc(beta if beta is not None else 0.5, x))
            return n.emit(ops.clip, y, min=0.0, max=1.0)
        if key == "softsign":
            return n.emit(ops.div, x, n.emit(ops.add, n.emit(ops.abs_, x), sc(1.0, x)))
        if key == "thresholdedrelu":
            keep = n.emit(ops.greater, x, sc(alpha if alpha is not None else 1.0, x))
            return n.emit(ops.where, keep, x, sc(0.0, x))
        if key == "elu":
            neg = n.emit(ops.mul, sc(alpha if alpha is not None else 1.0, x),
                         n.emit(ops.sub, n.emit(ops.exp, x), sc(1.0, x)))
            return n.emit(ops.where, n.emit(ops.less, x, sc(0.0, x)), neg, x)
        raise n.unsupported(f"{n.op_type} activation {name}")

    return act


def _activations(n: NodeCtx, dirs: int) -> list[list[Act]]:
    names = n.attr("activations") or _DEFAULT_ACTS[n.op_type] * dirs
    per = len(_DEFAULT_ACTS[n.op_type])
    if len(names) == per and dirs == 2:
        names = names * 2
    alphas, betas = n.attr("activation_alpha") or [], n.attr("activation_beta") or []
    acts = [_activation(n, nm, alphas[i] if i < len(alphas) else None,
                        betas[i] if i < len(betas) else None) for i, nm in enumerate(names)]
    return [acts[d * per:(d + 1) * per] for d in range(dirs)]


def _pick(n: NodeCtx, v: Value, d: int) -> Value:
    return n.emit(ops.gather, v, n.constant(d, "int64"), axis=0)


def _cols(n: NodeCtx, v: Value, k: int, h: int) -> Value:
    """Gate ``k`` (columns k*h:(k+1)*h) of a [..., G*h] value."""
    return n.emit(ops.slice_, v, starts=(k * h,), ends=((k + 1) * h,), axes=(-1,), steps=None)


def _reverse_index(n: NodeCtx, lens: Value | None, steps: int, like: Value) -> Value:
    """int64 [S, B, 1] index reversing each sequence's first lens[b] steps (or all steps)."""
    t = n.constant(np.arange(steps).reshape(-1, 1), "int64")
    if lens is None:
        return n.constant(np.arange(steps)[::-1].reshape(-1, 1, 1).copy(), "int64")
    ln = n.emit(ops.unsqueeze, n.emit(ops.cast, lens, to="int64"), axes=(0,))
    rev = n.emit(ops.sub, n.emit(ops.sub, ln, n.constant(1, "int64")), t)
    idx = n.emit(ops.where, n.emit(ops.less, t, ln), rev, t)
    return n.emit(ops.unsqueeze, idx, axes=(2,))


def _reverse(n: NodeCtx, x: Value, idx: Value) -> Value:
    return n.emit(ops.gather_elements, x, n.emit(ops.broadcast_like, idx, x), axis=0)


@handles("RNN", "GRU", "LSTM")
def _recurrent(n: NodeCtx) -> Any:
    kind = n.op_type
    g = _GATES[kind]
    x, w, r, b = n.x(0), n.x(1), n.x(2), n.opt(3)
    lens, h0 = n.opt(4), n.opt(5)
    c0 = n.opt(6) if kind == "LSTM" else None
    peep = n.opt(7) if kind == "LSTM" else None
    layout = n.attr("layout", 0)
    if layout:
        x = n.emit(ops.transpose, x, perm=(1, 0, 2))
        h0 = n.emit(ops.transpose, h0, perm=(1, 0, 2)) if h0 is not None else None
        c0 = n.emit(ops.transpose, c0, perm=(1, 0, 2)) if c0 is not None else None
    steps = x.shape[0]
    h = n.attr("hidden_size") or w.shape[1] // g
    if not isinstance(steps, int) or not isinstance(h, int):
        raise n.unsupported(f"{kind} needs a static sequence length, got {x.type}")
    direction = n.attr("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    acts = _activations(n, dirs)
    clip = n.attr("clip")
    mask_t = None
    if lens is not None:
        ln = n.emit(ops.unsqueeze, n.emit(ops.cast, lens, to="int64"), axes=(1,))  # [B, 1]
        mask_t = [n.emit(ops.less, n.constant(t, "int64"), ln) for t in range(steps)]
    ys, hs, cs = [], [], []
    for d in range(dirs):
        backward = direction == "reverse" or d == 1
        xd = _reverse(n, x, _reverse_index(n, lens, steps, x)) if backward else x
        wt = n.emit(ops.transpose, _pick(n, w, d), perm=(1, 0))
        rt = n.emit(ops.transpose, _pick(n, r, d), perm=(1, 0))
        xw = n.emit(ops.matmul, xd, wt)  # [S, B, G*h]
        rb = None
        if b is not None:
            bd = _pick(n, b, d)
            wb = n.emit(ops.slice_, bd, starts=(0,), ends=(g * h,), axes=None, steps=None)
            rb = n.emit(ops.slice_, bd, starts=(g * h,), ends=(2 * g * h,), axes=None,
                        steps=None)
            if kind == "GRU" and n.attr("linear_before_reset", 0):
                xw = n.emit(ops.add, xw, wb)  # Rbh stays inside the reset gate
            else:
                xw = n.emit(ops.add, xw, n.emit(ops.add, wb, rb))
                rb = None
        zeros = n.emit(ops.full_like, n.emit(ops.gather, xw, n.constant(0, "int64"), axis=0),
                       value=0.0)
        state = _pick(n, h0, d) if h0 is not None else _cols(n, zeros, 0, h)
        cell = (_pick(n, c0, d) if c0 is not None else _cols(n, zeros, 0, h)) if \
            kind == "LSTM" else None
        pd = _pick(n, peep, d) if peep is not None else None
        outs = []
        for t in range(steps):
            xt = n.emit(ops.gather, xw, n.constant(t, "int64"), axis=0)
            new_h, new_c = _step(n, kind, xt, state, cell, rt, rb, pd, h, acts[d], clip)
            if mask_t is not None:
                new_h = n.emit(ops.where, mask_t[t], new_h, state)
                if new_c is not None:
                    new_c = n.emit(ops.where, mask_t[t], new_c, cell)
                outs.append(n.emit(ops.where, mask_t[t], new_h, n.scalar(0, new_h)))
            else:
                outs.append(new_h)
            state, cell = new_h, new_c
        y = n.emit(ops.concat, *[n.emit(ops.unsqueeze, o, axes=(0,)) for o in outs], axis=0)
        if backward:
            y = _reverse(n, y, _reverse_index(n, lens, steps, y))
        ys.append(n.emit(ops.unsqueeze, y, axes=(1,)))
        hs.append(n.emit(ops.unsqueeze, state, axes=(0,)))
        if cell is not None:
            cs.append(n.emit(ops.unsqueeze, cell, axes=(0,)))
    y = n.emit(ops.concat, *ys, axis=1)  # [S, D, B, h]
    y_h = n.emit(ops.concat, *hs, axis=0)  # [D, B, h]
    y_c = n.emit(ops.concat, *cs, axis=0) if cs else None
    if layout:
        y = n.emit(ops.transpose, y, perm=(2, 0, 1, 3))
        y_h = n.emit(ops.transpose, y_h, perm=(1, 0, 2))
        y_c = n.emit(ops.transpose, y_c, perm=(1, 0, 2)) if y_c is not None else None
    return (y, y_h, y_c) if kind == "LSTM" else (y, y_h)


def _step(n: NodeCtx, kind: str, xt: Value, hp: Value, cp: Value | None, rt: Value,
          rb: Value | None, peep: Value | None, h: int, acts: list[Act], clip: float | None
          ) -> tuple[Value, Value | None]:
    """One time step: the new hidden state (and cell state for LSTM)."""

    def pre(v: Value) -> Value:
        return n.emit(ops.clip, v, min=-clip, max=clip) if clip is not None else v

    hr = n.emit(ops.matmul, hp, rt)  # [B, G*h]
    if kind == "RNN":
        return acts[0](pre(n.emit(ops.add, xt, hr))), None
    if kind == "GRU":
        f, gfn = acts[0], acts[1]
        zr = n.emit(ops.add, xt, hr) if rb is None else n.emit(ops.add, n.emit(ops.add, xt, hr),
                                                                   rb)
        z = f(pre(_cols(n, zr, 0, h)))
        rg = f(pre(_cols(n, zr, 1, h)))
        if rb is not None:  # linear_before_reset: r * (H @ Rh + Rbh)
            rh = n.emit(ops.mul, rg, n.emit(ops.add, _cols(n, hr, 2, h), _cols(n, rb, 2, h)))
        elif n.attr("linear_before_reset", 0):
            rh = n.emit(ops.mul, rg, _cols(n, hr, 2, h))
        else:
            rh = n.emit(ops.matmul, n.emit(ops.mul, rg, hp), _cols(n, rt, 2, h))
        cand = gfn(pre(n.emit(ops.add, _cols(n, xt, 2, h), rh)))
        one = n.scalar(1, z)
        new = n.emit(ops.add, n.emit(ops.mul, n.emit(ops.sub, one, z), cand),
                     n.emit(ops.mul, z, hp))
        return new, None
    assert cp is not None
    f, gfn, hfn = acts
    gates = n.emit(ops.add, xt, hr)

    def gate(k: int, peep_k: int | None, c: Value | None) -> Value:
        v = _cols(n, gates, k, h)
        if peep is not None and peep_k is not None and c is not None:
            v = n.emit(ops.add, v, n.emit(ops.mul, _cols(n, peep, peep_k, h), c))
        return pre(v)

    i = f(gate(0, 0, cp))
    coupled = n.attr("input_forget", 0)  # forget gate = 1 - input gate
    fg = n.emit(ops.sub, n.scalar(1, i), i) if coupled else f(gate(2, 2, cp))
    c_new = n.emit(ops.add, n.emit(ops.mul, fg, cp), n.emit(ops.mul, i, gfn(gate(3, None, None))))
    o = f(gate(1, 1, c_new))
    return n.emit(ops.mul, o, hfn(c_new)), c_new
