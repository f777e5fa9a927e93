"""Control-flow ops: ``if``, ``loop`` and ``scan``, whose bodies are nested graphs.

A body is a closed :class:`~lbdl_graph.graph.Graph` held in a ``graph`` attribute. It reads no
value of the enclosing graph by name: everything it needs from outside is an explicit operand of
the node (a *capture*) and arrives as one of the body's inputs, so that every pass that walks
nodes sees those reads as ordinary uses. The type rules check each body's signature against the
operands (the verifier also verifies the bodies themselves). Semantics follow ONNX If, Loop and
Scan; the ONNX lowering turns captures back into outer-scope references.

- ``if(cond, *captures)`` (one variadic operand list, cond first): ``then_branch`` and
  ``else_branch`` take the captures and return the outputs (both branches give the same types).
- ``loop(trip_count?, cond?, *carried, *captures)``: ``body(i, cond, *carried, *captures) ->
  (cond, *carried, *scan_outputs)``; ``num_carried`` counts the loop-carried values. Scan outputs
  are stacked along a new leading axis of length ``trip_dim`` (an int or a symbolic dim name:
  the number of iterations is a run-time value, so the builder names it).
- ``scan(*states, *scan_inputs, *captures)``: ``body(*states, *slices, *captures) ->
  (*states, *slice_outputs)``; inputs are cut along ``scan_input_axes`` (reversed where
  ``scan_input_directions`` is 1), outputs stacked along ``scan_output_axes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..dtypes import bool_, int64
from ..errors import OpError, ShapeError
from ..graph import Graph
from ..opdef import Attr, Trait, defop
from ..shapes import Dim, normalize_axis
from ..types import TensorType

__all__ = ["if_", "loop", "scan", "scan_layout"]

D = Trait.DIFFERENTIABLE
_SCALAR_BOOL = TensorType(bool_, ())
_SCALAR_I64 = TensorType(int64, ())


def _same(a: TensorType, b: TensorType) -> bool:
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)


def _check_signature(body: Graph, what: str, want: Sequence[TensorType | None]) -> None:
    """The body's inputs must have exactly the types ``want`` (None: anything)."""
    if len(body.inputs) != len(want):
        raise OpError(f"{what} '{body.name}' takes {len(body.inputs)} inputs but the node passes "
                      f"{len(want)} ({', '.join(str(t) for t in want)})")
    for i, (v, t) in enumerate(zip(body.inputs, want, strict=True)):
        if t is not None and not _same(v.type, t):
            raise OpError(f"{what} '{body.name}' input {i} (%{v.name}) is {v.type} but the node "
                          f"passes {t}")
    if body.params:
        raise OpError(f"{what} '{body.name}' holds parameters {[p.name for p in body.params]}; "
                      "a body reads outer values only as explicit captures")


# ---------------------------------------------------------------- if


def _if_rule(*operands: TensorType, then_branch: Graph,
             else_branch: Graph) -> tuple[TensorType, ...]:
    cond, captures = operands[0], operands[1:]
    if cond.dtype != bool_ or any(d != 1 for d in cond.shape):
        raise OpError(f"if: cond must be a one-element bool tensor, got {cond}")
    for what, g in (("then_branch", then_branch), ("else_branch", else_branch)):
        _check_signature(g, what, captures)
    a, b = [v.type for v in then_branch.outputs], [v.type for v in else_branch.outputs]
    if len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b, strict=True)):
        raise OpError(f"if: the branches give different types: then ({', '.join(map(str, a))}) "
                      f"else ({', '.join(map(str, b))})")
    return tuple(a)


if_ = defop("if", ("*operands",), infer=_if_rule,
            attrs=(Attr("then_branch", "graph"), Attr("else_branch", "graph")),
            outputs=lambda a: len(a["then_branch"].outputs), traits=(D,), onnx="If",
            doc="run then_branch(*captures) if cond else else_branch(*captures)")


# ---------------------------------------------------------------- loop


def _loop_rule(trip_count: TensorType | None, cond: TensorType | None, *rest: TensorType,
               body: Graph, num_carried: int, trip_dim: Dim | None) -> tuple[TensorType, ...]:
    if num_carried < 0 or num_carried > len(rest):
        raise OpError(f"loop: num_carried={num_carried} but the node has {len(rest)} operands "
                      "after trip_count and cond")
    for what, t, dt in (("trip_count", trip_count, int64), ("cond", cond, bool_)):
        if t is not None and (t.dtype != dt or any(d != 1 for d in t.shape)):
            raise OpError(f"loop: {what} must be a one-element {dt.name} tensor, got {t}")
    carried = rest[:num_carried]
    _check_signature(body, "loop body", [_SCALAR_I64, _SCALAR_BOOL, *rest])
    outs = [v.type for v in body.outputs]
    if len(outs) < 1 + num_carried:
        raise OpError(f"loop body '{body.name}' returns {len(outs)} values; it must return cond "
                      f"and the {num_carried} carried values first")
    if not _same(outs[0], _SCALAR_BOOL):
        raise OpError(f"loop body '{body.name}' must return a bool[] cond first, got {outs[0]}")
    for i, (t_in, t_out) in enumerate(zip(carried, outs[1:1 + num_carried], strict=True)):
        if not _same(t_in, t_out):
            raise ShapeError(f"loop: carried value {i} enters as {t_in} but the body returns "
                             f"{t_out} (a carried value keeps its type)")
    scans = outs[1 + num_carried:]
    if scans and trip_dim is None:
        raise OpError("loop: scan outputs need trip_dim (the iteration count's dim: an int or "
                      "a symbolic name)")
    if trip_dim is not None and not isinstance(trip_dim, int | str):
        raise OpError(f"loop: trip_dim must be an int or a dim name, got {trip_dim!r}")
    lead: Dim = trip_dim if trip_dim is not None else 0
    return (*carried, *(t.with_shape([lead, *t.shape]) for t in scans))


loop = defop("loop", ("trip_count?", "cond?", "*operands"), infer=_loop_rule,
             attrs=(Attr("body", "graph"), Attr("num_carried", "int"),
                    Attr("trip_dim", "any", None, True)),
             outputs=lambda a: len(a["body"].outputs) - 1, traits=(D,), onnx="Loop",
             doc="while i < trip_count and cond: (cond, *carried, *ys) = body(i, cond, ...)")


# ---------------------------------------------------------------- scan


def scan_layout(n_scan_in: int, n_scan_out: int, attrs: Mapping[str, Any]
                ) -> tuple[list[int], list[int], list[int], list[int]]:
    """Input axes, input directions, output axes and output directions (defaults filled)."""
    def pick(key: str, n: int) -> list[int]:
        got = attrs.get(key)
        vals = [0] * n if got is None else [int(v) for v in got]
        if len(vals) != n:
            raise OpError(f"scan: {key} has {len(vals)} entries for {n} scan values")
        return vals

    return (pick("scan_input_axes", n_scan_in), pick("scan_input_directions", n_scan_in),
            pick("scan_output_axes", n_scan_out), pick("scan_output_directions", n_scan_out))


def _scan_rule(*operands: TensorType, body: Graph, num_scan_inputs: int, num_captures: int,
               **layout: Any) -> tuple[TensorType, ...]:
    n_states = len(operands) - num_scan_inputs - num_captures
    if num_scan_inputs < 1 or num_captures < 0 or n_states < 0:
        raise OpError(f"scan: {len(operands)} operands do not hold num_scan_inputs="
                      f"{num_scan_inputs} scan inputs and num_captures={num_captures} captures")
    states = operands[:n_states]
    xs = operands[n_states:n_states + num_scan_inputs]
    caps = operands[n_states + num_scan_inputs:]
    n_out = len(body.outputs) - n_states
    if n_out < 0:
        raise OpError(f"scan body '{body.name}' returns {len(body.outputs)} values for "
                      f"{n_states} states")
    in_axes, in_dirs, out_axes, out_dirs = scan_layout(num_scan_inputs, n_out, layout)
    if any(d not in (0, 1) for d in (*in_dirs, *out_dirs)):
        raise OpError("scan: directions are 0 (forward) or 1 (reverse)")
    length: Dim | None = None
    slices = []
    for i, (x, ax) in enumerate(zip(xs, in_axes, strict=True)):
        if x.ndim < 1:
            raise ShapeError(f"scan: scan input {i} is a scalar ({x})")
        a = normalize_axis(ax, x.ndim)
        if length is None:
            length = x.shape[a]
        elif x.shape[a] != length:
            raise ShapeError(f"scan: scan input {i} has length {x.shape[a]} along axis {a}, "
                             f"scan input 0 has {length}")
        slices.append(x.with_shape([d for k, d in enumerate(x.shape) if k != a]))
    _check_signature(body, "scan body", [*states, *slices, *caps])
    outs = [v.type for v in body.outputs]
    for i, (t_in, t_out) in enumerate(zip(states, outs[:n_states], strict=True)):
        if not _same(t_in, t_out):
            raise ShapeError(f"scan: state {i} enters as {t_in} but the body returns {t_out}")
    stacked = []
    for t, ax in zip(outs[n_states:], out_axes, strict=True):
        a = normalize_axis(ax, t.ndim + 1)
        shape = list(t.shape)
        shape.insert(a, length)  # type: ignore[arg-type]
        stacked.append(t.with_shape(shape))
    return (*states, *stacked)


scan = defop("scan", ("*operands",), infer=_scan_rule,
             attrs=(Attr("body", "graph"), Attr("num_scan_inputs", "int"),
                    Attr("num_captures", "int", 0),
                    Attr("scan_input_axes", "ints", None, True),
                    Attr("scan_input_directions", "ints", None, True),
                    Attr("scan_output_axes", "ints", None, True),
                    Attr("scan_output_directions", "ints", None, True)),
             outputs=lambda a: len(a["body"].outputs), traits=(D,), onnx="Scan",
             doc="fold body over slices of the scan inputs, carrying states, stacking outputs")

