"""Recurrent layers: RNN, LSTM and GRU, unrolled over a static length or one ``scan``.

Parameters and gate order follow PyTorch (``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}``, suffix ``_reverse`` for the backward direction; LSTM gates
i, f, g, o and GRU gates r, z, n), all initialised U(±1/sqrt(hidden_size)). Inputs are
(L, N, H_in), or (N, L, H_in) with ``batch_first``.

``unroll`` picks the form: True unrolls the cell once per step (L must be static), False emits
per layer and direction one ``scan`` node whose body is the cell, carrying h (and c), with the
recurrent weights as captured operands (the reverse direction scans backwards); None (the
default) unrolls a static L and scans a symbolic one. The input projection of every step is
one matmul outside the loop in both forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder, current_builder
from lbdl_graph.errors import LbdlError, ShapeError
from lbdl_graph.graph import Graph, Value

from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ..tensor import Tensor, as_tensor, error
from ._util import check_int, check_prob, layer_error

__all__ = ["GRU", "LSTM", "RNN"]

State = Tensor | tuple[Tensor, Tensor]
Hidden = Callable[[Tensor], Tensor]  # h -> h W_hh^T + b_hh


class _RNNBase(Module):
    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, unroll: bool | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if unroll is not None and not isinstance(unroll, bool):
            raise layer_error(name, f"unroll must be True, False or None, got {unroll!r}")
        self.unroll = unroll
        self.input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size)
        self.num_layers = check_int(name, "num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = check_prob(name, "dropout", dropout)
        self.bidirectional = bool(bidirectional)
        dirs = 2 if bidirectional else 1
        g, h = self._gates * self.hidden_size, self.hidden_size
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else h * dirs
            for sfx in ["", "_reverse"][:dirs]:
                setattr(self, f"weight_ih_l{layer}{sfx}", Parameter(init.empty(g, width)))
                setattr(self, f"weight_hh_l{layer}{sfx}", Parameter(init.empty(g, h)))
                if self.bias:
                    setattr(self, f"bias_ih_l{layer}{sfx}", Parameter(init.empty(g)))
                    setattr(self, f"bias_hh_l{layer}{sfx}", Parameter(init.empty(g)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(±1/sqrt(hidden_size)) for every weight and bias, in registration order."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _cell(self, x_proj: Tensor, state: State, hidden: Hidden) -> State:
        raise NotImplementedError

    def _zeros(self, x: Tensor) -> Tensor:
        """An (N, hidden) zero state, N possibly symbolic."""
        col = Tensor(ops.full_like(x[:, :1].value, value=0.0))
        return col.expand(col.shape[0], self.hidden_size)

    def _initial(self, hx: Any, x0: Tensor, index: int) -> Tensor:
        if hx is None:
            return self._zeros(x0)
        return as_tensor(hx)[index]

    def _weights(self, layer: int, sfx: str) -> tuple[Tensor, Tensor, Tensor | None,
                                                      Tensor | None]:
        w_ih = getattr(self, f"weight_ih_l{layer}{sfx}")
        w_hh = getattr(self, f"weight_hh_l{layer}{sfx}")
        b_ih = getattr(self, f"bias_ih_l{layer}{sfx}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{layer}{sfx}") if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def _run_direction(self, xs: list[Tensor], state: State, layer: int, sfx: str
                       ) -> tuple[list[Tensor], State]:
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
        # the input projection of every step in one matmul, then one slice per step
        proj = F.linear(F.stack(xs), w_ih, b_ih)
        steps = range(len(xs) - 1, -1, -1) if sfx else range(len(xs))
        outs: list[Tensor | None] = [None] * len(xs)
        for t in steps:
            state = self._cell(proj[t], state, lambda h: F.linear(h, w_hh, b_hh))
            outs[t] = state[0] if isinstance(state, tuple) else state
        return [o for o in outs if o is not None], state

    def _scan_direction(self, seq: Tensor, state: State, layer: int, sfx: str
                        ) -> tuple[Tensor, State]:
        """One ``scan`` node over ``seq`` (L, N, H): the outputs (L, N, hidden), final state."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
        proj = F.linear(seq, w_ih, b_ih)
        states = list(state) if isinstance(state, tuple) else [state]
        # W_hh^T once, outside the loop (fold_params stores it as a weight for inference)
        w_t = w_hh.transpose(0, 1)
        caps = [w_t] if b_hh is None else [w_t, b_hh]
        # in training mode the body also returns the state entering each step, so the
        # scan's VJP reads the per-step carries instead of recomputing them
        try:
            body = self._cell_body(proj, states, caps, carries=self.training)
        except LbdlError as e:
            scope = current_builder().scope_name
            node = f"{scope}/scan_l{layer}{sfx}" if scope else f"scan_l{layer}{sfx}"
            raise type(e)(f"{type(self).__name__} layer {layer}{sfx} (the scan body of the "
                          f"cell): {e.message}", node=node, op="scan", source=e.source,
                          hint=e.hint) from None
        n_out = len(body.outputs) - len(states)
        outs = ops.scan(*[s.value for s in states], proj.value, *[c.value for c in caps],
                        body=body, num_scan_inputs=1, num_captures=len(caps),
                        scan_input_directions=[1] if sfx else None,
                        scan_output_directions=[1] * n_out if sfx else None,
                        name=f"scan_l{layer}{sfx}")
        final = [Tensor(v) for v in outs[:len(states)]]
        new: State = (final[0], final[1]) if len(final) == 2 else final[0]
        return Tensor(outs[len(states)]), new

    def _cell_body(self, proj: Tensor, states: list[Tensor], caps: list[Tensor], *,
                   carries: bool) -> Graph:
        """The cell as a closed graph: ``(h[, c], x_proj, w_hh^T[, b_hh]) -> (h'[, c'], h')``,
        followed by ``h[, c]`` with ``carries``."""
        bb = GraphBuilder(f"{type(self).__name__.lower()}_cell")
        names = ["h", "c"][:len(states)]
        ins = [bb.input(n, s.dtype, s.shape) for n, s in zip(names, states, strict=True)]
        x = bb.input("x_proj", proj.dtype, proj.shape[1:])
        cap_vals: list[Value] = [bb.input(n, c.dtype, c.shape)
                                 for n, c in zip(["weight_hh_t", "bias_hh"], caps, strict=False)]
        with bb:
            st: State = (Tensor(ins[0]), Tensor(ins[1])) if len(ins) == 2 else Tensor(ins[0])
            w_t = Tensor(cap_vals[0])
            b_hh = Tensor(cap_vals[1]) if len(cap_vals) == 2 else None

            def hidden(h: Tensor) -> Tensor:
                hw = h @ w_t
                return hw if b_hh is None else hw + b_hh

            new = self._cell(Tensor(x), st, hidden)
        outs = [t.value for t in new] if isinstance(new, tuple) else [new.value]
        return bb.build([*outs, outs[0], *(ins if carries else [])])

    def _use_scan(self, t: Tensor) -> bool:
        length = t.shape[0]
        if self.unroll is None:
            return not isinstance(length, int)
        if self.unroll and not isinstance(length, int):
            raise error(ShapeError, f"{type(self).__name__}: unroll=True needs a static "
                        f"sequence length, got {t.type}",
                        hint="pass unroll=None or False to trace one scan node instead")
        return not self.unroll

    def forward(self, x: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        """Run the sequence; returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``)."""
        t = as_tensor(x)
        name = type(self).__name__
        if t.ndim != 3 or (isinstance(t.shape[2], int) and t.shape[2] != self.input_size):
            layout = "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"
            raise error(ShapeError, f"{name}: input must be {layout} with H_in={self.input_size}, "
                        f"got {t.type}")
        if self.batch_first:
            t = t.transpose(0, 1)
        scan = self._use_scan(t)
        seq: Tensor = t
        xs = [] if scan else [t[i] for i in range(int(t.shape[0]))]
        first = t[0] if scan else xs[0]
        dirs = ["", "_reverse"] if self.bidirectional else [""]
        h0, c0 = (hx if isinstance(hx, tuple | list) else (hx, None))
        finals_h: list[Tensor] = []
        finals_c: list[Tensor] = []
        for layer in range(self.num_layers):
            outs_per_dir: list[list[Tensor]] = []
            seqs: list[Tensor] = []
            for d, sfx in enumerate(dirs):
                i = layer * len(dirs) + d
                h = self._initial(h0, first, i)
                state: State = (h, self._initial(c0, first, i)) if self._gates == 4 else h
                if scan:
                    out_seq, state = self._scan_direction(seq, state, layer, sfx)
                    seqs.append(out_seq)
                else:
                    outs, state = self._run_direction(xs, state, layer, sfx)
                    outs_per_dir.append(outs)
                if isinstance(state, tuple):
                    finals_h.append(state[0])
                    finals_c.append(state[1])
                else:
                    finals_h.append(state)
            drop = layer < self.num_layers - 1 and self.dropout > 0.0
            if scan:
                seq = F.cat(seqs, -1) if len(seqs) > 1 else seqs[0]
                seq = F.dropout(seq, self.dropout, self.training) if drop else seq
                continue
            xs = [F.cat(list(step), -1) if len(step) > 1 else step[0]
                  for step in zip(*outs_per_dir, strict=True)]
            if drop:
                xs = [F.dropout(s, self.dropout, self.training) for s in xs]
        out = seq if scan else F.stack(xs)
        if self.batch_first:
            out = out.transpose(0, 1)
        h_n = F.stack(finals_h)
        return (out, (h_n, F.stack(finals_c))) if self._gates == 4 else (out, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.unroll is not None:
            s += f", unroll={self.unroll}"
        return s


class RNN(_RNNBase):
    """Elman RNN: ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False,
                 unroll: bool | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise layer_error("RNN", f"nonlinearity must be 'tanh' or 'relu', got "
                              f"{nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, unroll)
        self.nonlinearity = nonlinearity

    def _cell(self, x_proj: Tensor, state: State, hidden: Hidden) -> State:
        assert not isinstance(state, tuple)
        pre = x_proj + hidden(state)
        return pre.tanh() if self.nonlinearity == "tanh" else pre.relu()


class LSTM(_RNNBase):
    """Long short-term memory; gates i, f, g, o stacked in that order."""

    _gates = 4

    def _cell(self, x_proj: Tensor, state: State, hidden: Hidden) -> State:
        assert isinstance(state, tuple)
        h, c = state
        i, f, g, o = (x_proj + hidden(h)).chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class GRU(_RNNBase):
    """Gated recurrent unit; gates r, z, n stacked in that order (PyTorch's formulation, with
    the reset gate applied after the hidden projection)."""

    _gates = 3

    def _cell(self, x_proj: Tensor, state: State, hidden: Hidden) -> State:
        assert not isinstance(state, tuple)
        xr, xz, xn = x_proj.chunk(3, -1)
        hr, hz, hn = hidden(state).chunk(3, -1)
        r = (xr + hr).sigmoid()
        z = (xz + hz).sigmoid()
        n = (xn + r * hn).tanh()
        return n + z * (state - n)
