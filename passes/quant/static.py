"""Post-training int8 quantisation: static (QDQ, calibrated) and dynamic.

``quantize_static`` rewrites every selected matmul / linear / conv into the QDQ form ONNX Runtime
turns into integer kernels: each float activation input goes through
``quantize_linear -> dequantize_linear`` with a calibrated per-tensor scale (uint8 asymmetric
by default), each weight parameter is stored as per-output-channel symmetric int8 behind a
``dequantize_linear``, and a convolution's output gets a QDQ pair too (ORT fuses
``DQ -> Conv -> Q`` into QLinearConv; ``DQ -> MatMul`` becomes MatMulIntegerToFloat). On NumPy
the same graph runs as fake quantisation, so both backends compute the same function.

``quantize_dynamic`` replaces matmul / linear with ``dynamic_quant_matmul``: int8 weights, the
activations quantised to uint8 at run time from their own range (no calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import OpError
from lbdl_graph.graph import Graph, Node, Value

from ..base import PassResult
from ._graph import KINDS, Rewriter, WeightUse, dead_transposes, only_weights, select_uses
from .calibrate import Batches, Evaluate, calibrate
from .weights import int8_weight

__all__ = ["activation_qparams", "quantize_dynamic", "quantize_static"]

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
             ) -> list[tuple[Node, WeightUse | None]]:
    """The nodes to quantise with their weight use (None: a matmul of two activations)."""
    uses = {u.node: u for u in select_uses(graph, kinds if nodes is None else tuple(KINDS),
                                           None, tuple(KINDS), "int8-static")}
    out: list[tuple[Node, WeightUse | None]] = []
    for n in graph.nodes:
        if nodes is not None and n.name not in nodes:
            continue
        if n in uses:
            out.append((n, uses[n]))
        elif n.op is ops.matmul and ("matmul" in kinds or nodes is not None) and all(
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


def quantize_static(graph: Graph, calibration_data: Batches, method: str = "minmax", *,
                    evaluate: Evaluate, kinds: Sequence[str] = ("matmul", "linear", "conv"),
                    nodes: Sequence[str] | None = None, activation_type: str = "uint8",
                    symmetric_activations: bool = False, reduce_range: bool = False,
                    percentile: float = 99.99, bins: int = 2048) -> PassResult:
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
    """
    if activation_type not in _ACT_TYPES:
        raise OpError(f"activation_type must be one of {_ACT_TYPES}, got {activation_type!r}")
    targets = _targets(graph, kinds, nodes)
    kept = set(only_weights(graph, [u for _, u in targets if u is not None]))
    targets = [(n, u) for n, u in targets if u is None or u in kept]
    if not targets:
        return PassResult(graph, False, {"nodes": 0, "weights": 0, "activations": 0})
    observed: list[Value] = []
    for n, u in targets:
        observed += [v for v in n.inputs[:1 if u is not None else 2] if v is not None]
        if u is not None and u.kind == "conv":
            observed.append(n.outputs[0])
    ranges = calibrate(graph, observed, calibration_data, evaluate, method=method,
                       percentile=percentile, bins=bins)
    qmax = 63 if reduce_range else 127
    dead_vias = dead_transposes(graph, [u for _, u in targets if u is not None])
    rw = Rewriter(graph)
    qdq: dict[Value, Value] = {}
    weights: dict[Any, Value] = {}
    info: dict[str, list[float]] = {}

    def fake(v: Value) -> Value:
        """The QDQ'd version of activation ``v`` (made once, right before its first use)."""
        if v not in qdq:
            lo, hi = ranges[v.name]
            s, zp = activation_qparams(lo, hi, activation_type, symmetric_activations)
            sv = rw.param(f"{v.name}.scale", np.asarray(s, dtype=v.dtype.numpy))
            zv = rw.param(f"{v.name}.zero_point",
                          np.asarray(zp, dtype=np.uint8 if activation_type == "uint8"
                                     else np.int8))
            q = rw.emit(ops.quantize_linear, v, sv, zv, name="quantize", prefix=v.name)
            qdq[v] = rw.emit(ops.dequantize_linear, q, sv, zv, name="dequantize", prefix=v.name)
            info[v.name] = [float(lo), float(hi), float(s), zp]
        return qdq[v]

    by_node = dict(targets)
    for node in graph.nodes:
        if node not in by_node:
            if node not in dead_vias:
                rw.keep(node)
            continue
        u = by_node[node]
        rw.node = node
        ins = [rw.subst.get(v, v) if v is not None else None for v in node.inputs]
        ins[0] = fake(node.inputs[0])  # type: ignore[arg-type]
        if u is None:
            ins[1] = fake(node.inputs[1])  # type: ignore[arg-type]
        else:
            if u.param not in weights:
                q, s, axis = int8_weight(rw, u, qmax)
                weights[u.param] = rw.emit(ops.dequantize_linear, q, s, axis=axis,
                                           name="dequantize", prefix=u.param.name)
            ins[1] = weights[u.param]
        rw.emit_as(node.op, *ins, out=node.outputs[0], **node.attrs)
        if u is not None and u.kind == "conv":
            rw.subst[node.outputs[0]] = fake(node.outputs[0])
        rw.node = None
    new = rw.build(drop_params=[u.param for _, u in targets if u is not None])
    meta = dict(new.metadata)
    meta["quantization"] = {**meta.get("quantization", {}), "static": {
        "method": method, "activation_type": activation_type,
        "activations": info, "weights": sorted(p.name for p in weights)}}
    stats = {"nodes": len(targets), "weights": len(weights), "activations": len(qdq)}
    return PassResult(new.replace(metadata=meta), True, stats)


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
    rw = Rewriter(graph)
    weights: dict[Any, tuple[Value, Value]] = {}
    for node in graph.nodes:
        u = by_node.get(node)
        if u is None:
            if node not in dead_vias:
                rw.keep(node)
            continue
        rw.node = node
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
        x = rw.subst.get(node.inputs[0], node.inputs[0])
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
