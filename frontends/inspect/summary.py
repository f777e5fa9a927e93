"""Model summaries in the Keras / torchinfo tradition: one row per layer (module path) or node.

MACs (multiply-accumulates) are counted per node by a rule keyed by op name (:data:`MAC_RULES`,
extend it with :func:`register_macs`):

* ``matmul`` and linear-like fused ops (an op whose name contains ``matmul``, ``gemm``,
  ``linear`` or ``dense``): output elements x the contracted length K (``a``'s last dim, or its
  second to last with a true ``trans_a``/``transA`` attribute);
* ``conv``, ``fused_conv`` (and ops whose name contains ``conv``): output elements x
  (C_in/group) x kernel size;
* ``attention``: the two matmuls (scores x head size, output x keys) plus the softmax sums;
* ``conv_transpose`` (names containing ``conv_transpose``/``deconv``): input elements x
  (C_out/group) x kernel size (each input element is scattered through the kernel);
* ops that accumulate without a separate multiply count one MAC per accumulated element:
  ``reduce_sum``/``reduce_mean``/``cumsum``/``softmax``/``log_softmax`` (input elements),
  ``avg_pool`` (output elements x window size); ``batch_norm`` counts one multiply-add per element
  (scale and shift folded), ``layer_norm`` three (mean, variance, scale-and-shift);
* everything else (elementwise arithmetic, comparisons, max-pooling, data movement, random
  numbers) counts 0: no multiply-accumulate, memory-bound work.

Symbolic dims are resolved from ``bindings`` (``{"N": 1}``); unbound names count as 1. Sizes are
in MB = 10^6 bytes; parameters by dtype width (4-bit types count half a byte per element).

Memory counts activations only: the node outputs that depend on a graph input. A value computed
from parameters and constants alone (a transposed weight, ``transpose(fc.weight)``) is the same
on every run: ONNX Runtime folds it into an initializer when the session starts and
``fold_params`` stores it as a parameter, so it is reported on its own line (derived from
params), not as forward-pass memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lbdl_graph.analysis import last_uses
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.opdef import Trait

from .common import (
    Bindings,
    fmt_count,
    fmt_types,
    module_of,
    resolve_numel,
    resolve_shape,
    shorten,
    type_bytes,
)

__all__ = ["MAC_RULES", "Summary", "SummaryRow", "node_macs", "param_derived_values",
           "register_macs", "summary"]

MacRule = Callable[[Node, Bindings | None], int]
MAC_RULES: dict[str, MacRule] = {}
MB = 1e6


def register_macs(*op_names: str) -> Callable[[MacRule], MacRule]:
    """Register ``fn(node, bindings) -> int`` as the MAC count of the named ops."""

    def deco(fn: MacRule) -> MacRule:
        for name in op_names:
            MAC_RULES[name] = fn
        return fn

    return deco


def _numel(v: Value | None, bindings: Bindings | None) -> int:
    return 0 if v is None else resolve_numel(v, bindings)


@register_macs("matmul", "linear", "matmul_nbits", "dynamic_quant_matmul")
def _matmul_macs(node: Node, bindings: Bindings | None) -> int:
    if len(node.inputs) < 2 or node.inputs[0] is None or not node.outputs:
        return 0
    a = resolve_shape(node.inputs[0].shape, bindings)
    if not a:
        return 0
    trans = bool(node.attrs.get("trans_a", node.attrs.get("transA", False)))
    k = a[-2] if trans and len(a) >= 2 else a[-1]
    return _numel(node.outputs[0], bindings) * k


@register_macs("attention")
def _attention_macs(node: Node, bindings: Bindings | None) -> int:
    """q @ k^T (scores x D), softmax (scores) and p @ v (output x Lk)."""
    if len(node.inputs) < 3 or any(v is None for v in node.inputs[:3]) or not node.outputs:
        return 0
    q = resolve_shape(node.inputs[0].shape, bindings)  # type: ignore[union-attr]
    k = resolve_shape(node.inputs[1].shape, bindings)  # type: ignore[union-attr]
    out = _numel(node.outputs[0], bindings)
    v_dim = resolve_shape(node.outputs[0].shape, bindings)[-1]
    scores = out // v_dim * k[-2] if v_dim else 0
    return scores * q[-1] + scores + out * k[-2]


@register_macs("conv", "fused_conv")
def _conv_macs(node: Node, bindings: Bindings | None) -> int:
    if len(node.inputs) < 2 or node.inputs[1] is None or not node.outputs:
        return 0
    w = resolve_shape(node.inputs[1].shape, bindings)
    return _numel(node.outputs[0], bindings) * math.prod(w[1:])


@register_macs("conv_transpose")
def _conv_transpose_macs(node: Node, bindings: Bindings | None) -> int:
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return 0
    w = resolve_shape(node.inputs[1].shape, bindings)
    return _numel(node.inputs[0], bindings) * math.prod(w[1:])


@register_macs("reduce_sum", "reduce_mean", "cumsum", "softmax", "log_softmax")
def _accumulate_macs(node: Node, bindings: Bindings | None) -> int:
    return _numel(node.inputs[0], bindings) if node.inputs else 0


@register_macs("avg_pool")
def _avg_pool_macs(node: Node, bindings: Bindings | None) -> int:
    return _numel(node.outputs[0], bindings) * math.prod(node.attrs.get("kernel_shape", (1,)))


@register_macs("batch_norm")
def _batch_norm_macs(node: Node, bindings: Bindings | None) -> int:
    return _numel(node.outputs[0], bindings)


@register_macs("layer_norm")
def _layer_norm_macs(node: Node, bindings: Bindings | None) -> int:
    return 3 * _numel(node.outputs[0], bindings)


_GUESSES: tuple[tuple[re.Pattern[str], MacRule], ...] = (
    (re.compile(r"conv_?transpose|deconv"), _conv_transpose_macs),
    (re.compile(r"conv"), _conv_macs),
    (re.compile(r"matmul|gemm|linear|dense"), _matmul_macs),
)


def node_macs(node: Node, bindings: Bindings | None = None) -> int:
    """Multiply-accumulates of one node (see the module docstring for the rules)."""
    rule = MAC_RULES.get(node.op.name)
    if rule is None:
        rule = next((fn for pat, fn in _GUESSES if pat.search(node.op.name)), None)
    if rule is None:
        return 0
    try:
        return int(rule(node, bindings))
    except (IndexError, TypeError, ValueError, KeyError):
        return 0


@dataclass(frozen=True)
class SummaryRow:
    """One layer (or node): its nodes, ops, output type(s), parameters it reads and MACs."""

    name: str
    ops: tuple[str, ...]
    output: str
    params: int
    trainable_params: int
    macs: int
    nodes: tuple[str, ...]

    @property
    def op_text(self) -> str:
        """The ops in first-use order with repeat counts: ``matmul, add×2``."""
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op] = counts.get(op, 0) + 1
        return ", ".join(op if c == 1 else f"{op}×{c}" for op, c in counts.items())


@dataclass(frozen=True)
class Summary:
    """A model summary: rows plus totals. ``str()`` gives an aligned table, ``to_dict()`` JSON."""

    graph: str
    by: str
    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    unused_params: int
    total_macs: int
    param_bytes: int
    input_bytes: int
    activation_bytes: int
    peak_activation_bytes: int
    bindings: Mapping[str, int] = field(default_factory=dict)
    param_derived_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Inputs + all activations + parameters (the torchinfo 'estimated total size')."""
        return self.input_bytes + self.activation_bytes + self.param_bytes

    def row(self, name: str) -> SummaryRow:
        """The row named ``name`` (KeyError if none)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row '{name}' in summary of '{self.graph}'")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: graph, by, bindings, rows and totals."""
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["ops"] = list(r.ops)
            d["nodes"] = list(r.nodes)
            rows.append(d)
        return {
            "graph": self.graph,
            "by": self.by,
            "bindings": dict(self.bindings),
            "rows": rows,
            "totals": {
                "params": self.total_params,
                "trainable_params": self.trainable_params,
                "non_trainable_params": self.non_trainable_params,
                "unused_params": self.unused_params,
                "macs": self.total_macs,
                "param_bytes": self.param_bytes,
                "input_bytes": self.input_bytes,
                "activation_bytes": self.activation_bytes,
                "peak_activation_bytes": self.peak_activation_bytes,
                "param_derived_bytes": self.param_derived_bytes,
                "total_bytes": self.total_bytes,
            },
        }

    def __str__(self) -> str:
        head = ("Layer" if self.by == "layer" else "Node", "Op(s)", "Output shape", "Params",
                "MACs")
        body = [(shorten(r.name, 48), shorten(r.op_text, 28), shorten(r.output, 36),
                 fmt_count(r.params) if r.params else "-", fmt_count(r.macs) if r.macs else "-")
                for r in self.rows]
        widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i])
                  for i in range(5)]

        def line(cells: tuple[str, ...]) -> str:
            left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
            right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
            return "  ".join(left + right).rstrip()

        total_width = sum(widths) + 2 * 4
        dims = ", ".join(f"{k}={v}" for k, v in self.bindings.items())
        out = [f"Summary of '{self.graph}'" + (f" ({dims})" if dims else ""), "=" * total_width,
               line(head), "=" * total_width, *(line(b) for b in body), "=" * total_width]
        out += [
            f"Total params: {fmt_count(self.total_params)}",
            f"Trainable params: {fmt_count(self.trainable_params)}",
            f"Non-trainable params: {fmt_count(self.non_trainable_params)}",
        ]
        if self.unused_params:
            out.append(f"Params read by no node: {fmt_count(self.unused_params)}")
        out += [
            f"Total MACs: {fmt_count(self.total_macs)} ({_human(self.total_macs)})",
            "-" * total_width,
            f"Input size (MB): {self.input_bytes / MB:.2f}",
            f"Forward pass size (MB): {self.activation_bytes / MB:.2f}",
            f"Peak live activations (MB): {self.peak_activation_bytes / MB:.2f}",
            f"Params size (MB): {self.param_bytes / MB:.2f}",
            *([f"Derived from params (MB): {self.param_derived_bytes / MB:.2f} (computed "
               "from weights alone, not activations)"] if self.param_derived_bytes else []),
            f"Estimated total size (MB): {self.total_bytes / MB:.2f}",
            "=" * total_width,
        ]
        return "\n".join(out)


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _symbols(graph: Graph) -> list[str]:
    names: dict[str, None] = {}
    for v in graph.iter_values():
        for d in v.shape:
            if isinstance(d, str):
                names.update(dict.fromkeys(_SYMBOL.findall(d)))
    return list(names)


def summary(
    graph: Graph,
    *,
    by: Literal["layer", "node"] = "layer",
    bindings: Bindings | None = None,
    depth: int | None = None,
) -> Summary:
    """Summarise ``graph`` per layer (nodes grouped by module path) or per node.

    A layer is the part of a node name before "/" (``enc.layers.0.attn.q_proj/matmul`` is in
    ``enc.layers.0.attn.q_proj``); ``depth`` keeps only the first ``depth`` dotted components.
    Nodes outside any scope are rows of their own. A parameter is counted once, in the row of
    the first node that reads it; symbolic dims take ``bindings`` (default 1).
    """
    if by not in ("layer", "node"):
        raise ValueError(f"summary: by must be 'layer' or 'node', got {by!r}")
    resolved = {s: int((bindings or {}).get(s, 1)) for s in _symbols(graph)}
    resolved.update({k: int(v) for k, v in (bindings or {}).items()})

    def key(n: Node) -> str:
        if by == "node":
            return n.name
        mod = module_of(n.name)
        if not mod:
            return n.name
        return ".".join(mod.split(".")[:depth]) if depth else mod

    groups: dict[str, list[Node]] = {}
    for n in graph.nodes:
        groups.setdefault(key(n), []).append(n)
    owner = {n: key(n) for n in graph.nodes}
    params: dict[str, list[int]] = {g: [0, 0] for g in groups}
    seen: set[str] = set()
    for n in graph.nodes:
        for v in n.inputs:
            p = graph.param_of(v) if v is not None else None
            if p is not None and p.name not in seen:
                seen.add(p.name)
                params[owner[n]][0] += int(p.data.size)
                params[owner[n]][1] += int(p.data.size) if p.trainable else 0
    rows = []
    outputs = set(graph.outputs)
    static = param_derived_values(graph)
    for name, nodes in groups.items():
        rows.append(SummaryRow(
            name=name,
            ops=tuple(n.op.name for n in nodes),
            output=_layer_output(graph, nodes, name, owner, outputs),
            params=params[name][0],
            trainable_params=params[name][1],
            macs=sum(node_macs(n, resolved) for n in nodes),
            nodes=tuple(n.name for n in nodes),
        ))
    return Summary(
        graph=graph.name,
        by=by,
        rows=tuple(rows),
        total_params=graph.num_params(),
        trainable_params=graph.num_params(trainable=True),
        non_trainable_params=graph.num_params(trainable=False),
        unused_params=sum(int(p.data.size) for p in graph.params if p.name not in seen),
        total_macs=sum(r.macs for r in rows),
        param_bytes=sum((int(p.data.size) * p.value.dtype.bits + 7) // 8 for p in graph.params),
        input_bytes=sum(type_bytes(v.type, resolved) for v in graph.inputs),
        activation_bytes=sum(type_bytes(v.type, resolved) for n in graph.nodes
                             for v in n.outputs if v not in static),
        peak_activation_bytes=_peak_bytes(graph, resolved, static),
        bindings=resolved,
        param_derived_bytes=sum(type_bytes(v.type, resolved) for v in static),
    )


def param_derived_values(graph: Graph) -> set[Value]:
    """Node outputs of static shape computed from parameters and constants only (no graph
    input, no random op): the same on every run, so weights rather than activations."""
    static = {p.value for p in graph.params}
    out: set[Value] = set()
    for n in graph.nodes:
        if not n.op.has(Trait.STOCHASTIC) and all(v.type.is_static for v in n.outputs) and \
                all(v in static for v in n.inputs if v is not None):
            static.update(n.outputs)
            out.update(n.outputs)
    return out


def _layer_output(graph: Graph, nodes: list[Node], name: str, owner: Mapping[Node, str],
                  outputs: set[Value]) -> str:
    """Types of the values the layer hands to other layers or the graph outputs."""
    leaving = [v for n in nodes for v in n.outputs
               if v in outputs or any(owner[c] != name for c in graph.consumers.get(v, ()))]
    return fmt_types(leaving or list(nodes[-1].outputs))


def _peak_bytes(graph: Graph, bindings: Bindings, static: set[Value]) -> int:
    """The largest total size of activations (node outputs not in ``static``) alive at once,
    running nodes in graph order."""
    live = peak = 0
    for n, dead in zip(graph.nodes, last_uses(graph), strict=True):
        live += sum(type_bytes(v.type, bindings) for v in n.outputs if v not in static)
        peak = max(peak, live)
        live -= sum(type_bytes(v.type, bindings) for v in dead
                    if graph.producer(v) is not None and v not in static)
    return peak
