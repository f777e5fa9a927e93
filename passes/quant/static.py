"""Post-training int8 quantisation: static (QDQ, calibrated) and dynamic.

``quantize_static`` rewrites every selected matmul / linear / conv into the QDQ form ONNX Runtime
turns into integer kernels: each float activation input goes through
``quantize_linear -> dequantize_linear`` with a calibrated per-tensor scale (uint8 asymmetric
by default), each weight parameter is stored as per-output-channel symmetric int8 behind a
``dequantize_linear``, and a convolution's output gets a QDQ pair too (ORT fuses
``DQ -> Conv -> Q`` into QLinearConv; ``DQ -> MatMul`` becomes MatMulIntegerToFloat). A matmul
whose output an add reads (a bias) gets an output QDQ pair too, as ORT would otherwise fuse the
float MatMul + Add into a Gemm before its QDQ fusions run (``DQ -> MatMul -> Q`` becomes
QLinearMatMul). On NumPy the same graph runs as fake quantisation, so both backends compute the
same function. :func:`plan_static` and :func:`rewrite_static` are the placement and the rewrite,
shared with quantisation-aware training (:mod:`.qat`).

``quantize_dynamic`` replaces matmul / linear with ``dynamic_quant_matmul``: int8 weights, the
activations quantised to uint8 at run time from their own range (no calibration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import dtype as as_dtype
from lbdl_graph.errors import OpError
from lbdl_graph.graph import Graph, Node, Value

from ..base import PassResult
from ._graph import KINDS, Rewriter, WeightUse, dead_transposes, only_weights, select_uses
from .calibrate import Batches, Evaluate, calibrate
from .weights import int8_weight

__all__ = ["StaticPlan", "activation_qparams", "plan_static", "qdq_pair", "quantize_dynamic",
           "quantize_static", "rewrite_static"]

_ACT_TYPES = ("uint8", "int8")


def activation_qparams(lo: float, hi: float, dtype: str = "uint8",
                       symmetric: bool = False) -> tuple[np.float32, int]:
    """Scale and zero point covering [lo, hi] (widened to include 0) with ``dtype`` codes.

    Asymmetric uint8 maps lo..hi onto 0..255; symmetric ranges are [-a, a] with a = max |.|
    (zero point 0 for int8, 128 for uint8). A zero-width range gets scale 1.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric or dtype == "int8":
        a = max(-lo, hi)
        lo, hi = (-a, a)
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    if dtype == "int8":
        qmin = -127  # symmetric int8 keeps -128 unused, as ORT's quantiser
    scale = np.float32((hi - lo) / (qmax - qmin)) if hi > lo else np.float32(1.0)
    zp = int(np.clip(np.rint(qmin - lo / float(scale)), qmin, qmax)) if dtype == "uint8" else 0
    return scale, zp


def _float_activation(graph: Graph, v: Value | None) -> bool:
    return v is not None and v.dtype.name in ("float32", "float16") and graph.param_of(v) is None


def _targets(graph: Graph, kinds: Sequence[str], nodes: Sequence[str] | None,
             pairs: bool = True) -> list[tuple[Node, WeightUse | None]]:
    """The nodes to quantise with their weight use (None: a matmul of two activations, only
    with ``pairs``)."""
    uses = {u.node: u for u in select_uses(graph, kinds if nodes is None else tuple(KINDS),
                                           None, tuple(KINDS), "int8-static")}
    out: list[tuple[Node, WeightUse | None]] = []
    for n in graph.nodes:
        if nodes is not None and n.name not in nodes:
            continue
        if n in uses:
            out.append((n, uses[n]))
        elif pairs and n.op is ops.matmul and ("matmul" in kinds or nodes is not None) and all(
                _float_activation(graph, v) for v in n.inputs):
            out.append((n, None))
        elif nodes is not None:
            raise OpError(f"node '{n.name}' ({n.op.name}) is not a matmul, linear or conv with "
                          "float activations; static int8 quantisation does not apply",
                          node=n.name, op=n.op.name, source=n.source)
    if nodes is not None:
        missing = sorted(set(nodes) - set(graph.node_map))
        if missing:
            raise OpError(f"no node(s) {missing} in graph '{graph.name}'")
    return [(n, u) for n, u in out if _float_activation(graph, n.inputs[0])]


def _gemm_fusable(graph: Graph, node: Node) -> bool:
    """Whether ONNX Runtime's MatMulAddFusion would turn ``node`` and the add reading it into a
    Gemm: a 2-D weight, an input of rank 2 (or of static shape), one consumer that is an add."""
    x, w, out = node.inputs[0], node.inputs[1], node.outputs[0]
    if x is None or w is None or w.ndim != 2 or out in graph.outputs:
        return False
    static = all(isinstance(d, int) for d in x.shape)
    readers = graph.consumers.get(out, ())
    return (x.ndim == 2 or static) and len(readers) == 1 and readers[0].op is ops.add


def _split_linear(graph: Graph, nodes: set[Node]) -> tuple[Graph, dict[str, str]]:
    """``linear`` nodes with a bias as matmul + add (+ activation), so that the matmul's output
    can be quantised; returns the new graph and each split node's matmul name."""
    rw = Rewriter(graph, "quantize_static:split_linear")
    names: dict[str, str] = {}
    for node, _ in rw.visit(dict.fromkeys(nodes)):
        x, w = (rw.current(v) for v in node.inputs[:2])
        assert x is not None and w is not None
        rw.emit_linear(ops.matmul, x, w, bias=node.inputs[2],
                       activation=node.attrs["activation"])
        names[node.name] = f"{node.name}/matmul"
        rw.node = None
    return rw.build(), names


@dataclass(frozen=True)
class StaticPlan:
    """Where static quantisation puts its QDQ pairs: the target nodes with their weight use
    (None: a matmul of two activations) and the activation values to quantise: target inputs,
    convolution outputs and the outputs of matmuls ONNX Runtime would fuse with an add."""

    targets: tuple[tuple[Node, WeightUse | None], ...]
    activations: tuple[Value, ...]


def plan_static(graph: Graph, kinds: Sequence[str] = ("matmul", "linear", "conv"),
                nodes: Sequence[str] | None = None, *, activations: bool = True,
                activation_pairs: bool = True,
                requantize_before_add: bool = True) -> tuple[Graph, StaticPlan]:
    """The graph to rewrite (linear nodes with a bias split where needed) and its plan; without
    ``activations`` only the weight nodes are planned (weight-only fake quantisation), without
    ``activation_pairs`` matmuls of two activations (attention) are left alone."""
    targets = _targets(graph, kinds, nodes, pairs=activations and activation_pairs)
    kept = set(only_weights(graph, [u for _, u in targets if u is not None]))
    targets = [(n, u) for n, u in targets if u is None or u in kept]
    if activations and requantize_before_add:
        # a linear with a bias exports as Gemm (2-D input) or MatMul + Add, which ORT fuses
        split = {n for n, u in targets if n.op is ops.linear and n.inputs[2] is not None
                 and n.inputs[0] is not None and (n.inputs[0].ndim == 2 or all(
                     isinstance(d, int) for d in n.inputs[0].shape))}
        if split:
            names = {n.name for n, _ in targets}
            graph, renamed = _split_linear(graph, split)
            targets = _targets(graph, kinds, [renamed.get(n, n) for n in names])
            kept = set(only_weights(graph, [u for _, u in targets if u is not None]))
            targets = [(n, u) for n, u in targets if u is None or u in kept]
    points: list[Value] = []
    if activations:
        for n, u in targets:
            points += [v for v in n.inputs[:1 if u is not None else 2] if v is not None]
            if (u is not None and u.kind == "conv") or (
                    requantize_before_add and n.op is ops.matmul and _gemm_fusable(graph, n)):
                points.append(n.outputs[0])
    return graph, StaticPlan(tuple(targets), tuple(dict.fromkeys(points)))


ActivationFn = Callable[[Rewriter, Value], Value]
WeightFn = Callable[[Rewriter, WeightUse], Value]


def rewrite_static(graph: Graph, plan: StaticPlan, activation: ActivationFn,
                   weight: WeightFn, origin: str = "quantize_static:qdq") -> Graph:
    """Re-emit ``graph`` with ``activation(rw, v)`` in place of each planned activation (made
    once, before its first quantised reader or right after its quantised producer) and
    ``weight(rw, use)`` as the weight input of each weight node; new nodes get ``origin``."""
    rw = Rewriter(graph, origin)
    done: dict[Value, Value] = {}
    points = set(plan.activations)

    def act(v: Value) -> Value:
        if v not in done:
            done[v] = activation(rw, v)
        return done[v]

    by_node = dict(plan.targets)
    dead_vias = dead_transposes(graph, [u for _, u in plan.targets if u is not None])
    for node, u in rw.visit(by_node, dead_vias):
        ins = [rw.subst.get(v, v) if v is not None else None for v in node.inputs]
        for i, v in enumerate(node.inputs[:1 if u is not None else 2]):
            if v in points:
                ins[i] = act(v)
        if u is not None:
            ins[1] = weight(rw, u)
        rw.emit_as(node.op, *ins, out=node.outputs[0], **node.attrs)
        if node.outputs[0] in points:
            rw.subst[node.outputs[0]] = act(node.outputs[0])
        rw.node = None
    return rw.build(drop_params=[u.param for _, u in plan.targets if u is not None])


def quantize_static(graph: Graph, calibration_data: Batches, method: str = "minmax", *,
                    evaluate: Evaluate, kinds: Sequence[str] = ("matmul", "linear", "conv"),
                    nodes: Sequence[str] | None = None, activation_type: str = "uint8",
                    symmetric_activations: bool = False, reduce_range: bool = False,
                    percentile: float = 99.99, bins: int = 2048,
                    activation_pairs: bool = True,
                    requantize_before_add: bool = True) -> PassResult:
    """Static int8 post-training quantisation into a QDQ graph.

    Args:
        graph: any graph whose matmul / linear / conv nodes read float activations.
        calibration_data: feeds (input name -> array) or an iterable of such batches; each is
            checked against the graph inputs (InputError naming the input and the shapes).
        method: activation range selection: "minmax", "percentile" or "entropy" (KL).
        evaluate: ``evaluate(graph, feeds) -> outputs by name`` runs a graph (a backend).
        kinds / nodes: which ops, or which nodes by name, to quantise.
        activation_type: "uint8" (asymmetric, ORT's default) or "int8" (symmetric).
        reduce_range: 7-bit weights (|q| <= 63), for CPUs without VNNI whose u8 x s8 products
            can saturate 16-bit sums.
        percentile, bins: parameters of the histogram methods.
        activation_pairs: also quantise matmuls of two activations (attention scores and
            their product with the values); small ones run faster in float on ORT.
        requantize_before_add: also quantise the output of a matmul that an add (a bias)
            reads, splitting a linear with a bias into matmul + add. ONNX Runtime's
            MatMulAddFusion otherwise makes the pair a float Gemm before its QDQ fusions run,
            so the int8 weights are dequantised on every call (2-3x slower than float32 for a
            784x256 layer, ORT 1.31); with the QDQ it runs QLinearMatMul (about 2x faster).
    """
    if activation_type not in _ACT_TYPES:
        raise OpError(f"activation_type must be one of {_ACT_TYPES}, got {activation_type!r}")
    graph, plan = plan_static(graph, kinds, nodes, activation_pairs=activation_pairs,
                              requantize_before_add=requantize_before_add)
    if not plan.targets:
        return PassResult(graph, False, {"nodes": 0, "weights": 0, "activations": 0})
    ranges = calibrate(graph, plan.activations, calibration_data, evaluate, method=method,
                       percentile=percentile, bins=bins)
    qmax = 63 if reduce_range else 127
    weights: dict[Any, Value] = {}
    info: dict[str, list[float]] = {}

    def qdq(rw: Rewriter, v: Value) -> Value:
        """Quantize -> dequantize of activation ``v`` with its calibrated parameters."""
        lo, hi = ranges[v.name]
        s, zp = activation_qparams(lo, hi, activation_type, symmetric_activations)
        info[v.name] = [float(lo), float(hi), float(s), zp]
        return qdq_pair(rw, v, s, zp, activation_type)

    def weight(rw: Rewriter, u: WeightUse) -> Value:
        if u.param not in weights:
            q, s, axis = int8_weight(rw, u, qmax)
            weights[u.param] = rw.emit(ops.dequantize_linear, q, s, axis=axis,
                                       name="dequantize", prefix=u.param.name)
        return weights[u.param]

    new = rewrite_static(graph, plan, qdq, weight)
    meta = dict(new.metadata)
    meta["quantization"] = {**meta.get("quantization", {}), "static": {
        "method": method, "activation_type": activation_type,
        "activations": info, "weights": sorted(p.name for p in weights)}}
    stats = {"nodes": len(plan.targets), "weights": len(weights), "activations": len(info)}
    return PassResult(new.replace(metadata=meta), True, stats)


def qdq_pair(rw: Rewriter, v: Value, scale: float | np.floating[Any], zero_point: int,
             dtype: str = "uint8") -> Value:
    """``dequantize_linear(quantize_linear(v))`` with per-tensor parameters stored as
    ``<v>.scale`` / ``<v>.zero_point``; the codes have ``dtype`` (uint8, int8, uint4, int4)."""
    sv = rw.param(f"{v.name}.scale", np.asarray(scale, dtype=v.dtype.numpy))
    zv = rw.param(f"{v.name}.zero_point",
                  np.asarray(zero_point, dtype=np.int16).astype(as_dtype(dtype).numpy))
    q = rw.emit(ops.quantize_linear, v, sv, zv, name="quantize", prefix=v.name)
    return rw.emit(ops.dequantize_linear, q, sv, zv, name="dequantize", prefix=v.name)


def quantize_dynamic(graph: Graph, *, kinds: Sequence[str] = ("matmul", "linear"),
                     nodes: Sequence[str] | None = None, per_channel: bool = True,
                     reduce_range: bool = False) -> PassResult:
    """Dynamic quantisation: float32 matmul / linear with a weight parameter become
    ``dynamic_quant_matmul`` (int8 symmetric weights per output column, or one scale with
    ``per_channel=False``; a linear's 1-D bias is folded in, its activation follows)."""
    uses = only_weights(graph, [
        u for u in select_uses(graph, kinds, nodes, ("matmul", "linear"), "dynamic")
        if u.node.inputs[0] is not None and u.node.inputs[0].dtype.name == "float32"
        and u.param.data.dtype == np.float32])
    if not uses:
        return PassResult(graph, False, {"nodes": 0, "weights": 0})
    qmax = 63 if reduce_range else 127
    by_node = {u.node: u for u in uses}
    dead_vias = dead_transposes(graph, uses)
    rw = Rewriter(graph, "quantize_dynamic:int8")
    weights: dict[Any, tuple[Value, Value]] = {}
    for node, u in rw.visit(by_node, dead_vias):
        if u.param not in weights:
            w = u.matrix_nk().T  # (K, N)
            if per_channel:
                q, s, _ = int8_weight(rw, u, qmax)
            else:
                amax = float(np.abs(w).max())
                scale = np.float32(amax / qmax if amax > 0 else 1.0)
                q = rw.param(f"{u.param.name}.q",
                             np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8))
                s = rw.param(f"{u.param.name}.scale", np.asarray(scale, dtype=np.float32))
            weights[u.param] = (q, s)
        q, s = weights[u.param]
        x = rw.current(node.inputs[0])
        if node.op is ops.matmul:
            rw.emit_as(ops.dynamic_quant_matmul, x, q, s, None, None, out=node.outputs[0])
        else:
            b = node.inputs[2]
            n_out = q.shape[1]
            fold = b is not None and b.dtype.name == "float32" and tuple(b.shape) == (n_out,)
            bias = rw.subst.get(b, b) if fold and b is not None else None
            rw.emit_linear(ops.dynamic_quant_matmul, x, q, s, None, bias,
                           bias=None if fold else b, activation=node.attrs["activation"])
        rw.node = None
    new = rw.build(drop_params=[u.param for u in uses])
    return PassResult(new, True, {"nodes": len(uses), "weights": len(weights)})
