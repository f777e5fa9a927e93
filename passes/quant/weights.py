"""Weight-only quantisation: ``quantize_weights(graph, scheme)``.

Block schemes (llama.cpp's ``q4_0``, ``q4_1``, ``q8_0``; :mod:`.blocks`) turn every selected
``matmul`` / ``linear`` with a weight parameter into ``matmul_nbits`` (ONNX Runtime's
MatMulNBits layout): the codes are repacked to ORT's nibble order and the fp16 block scales
(and Q4_1 minima) are stored as they are, so the parameters take exactly the block format's
bytes (20 per 32 weights for Q4_1). The NumPy backend dequantises block by block and
multiplies; the ONNX export emits MatMulNBits on target "ort" (ORT constant-folds the fp16
casts at load time, then prepacks the weight) and standard ops on target "portable".

Q4_1's ``x~ = d q + m`` needs a per-block offset MatMulNBits only has as a float zero point
(``zp = -m / d``), which sends ORT's CPU kernel down a path that dequantises the whole weight on
every call (29 ms instead of 0.4 ms for 4096 x 4096, measured on ORT 1.31). By default it is
therefore split: ``x @ (d (q - 8))^T`` (zero point 8: the fast kernel) plus
``blocksums(x) @ (m + 8 d)^T``, a matmul 32 times smaller. ``q4_1_form="float"`` emits the
float zero points instead. ``int8`` stores per-output-channel symmetric int8 weights behind a
``dequantize_linear`` and also applies to convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.errors import OpError, ShapeError
from lbdl_graph.graph import Graph, Param, Value

from ..base import PassResult
from ._graph import (
    Rewriter,
    WeightUse,
    dead_transposes,
    only_weights,
    select_uses,
    untie_weights,
)
from .blocks import FORMATS, QK, block_fields, pack_nibbles_ort, quantize_blocks

__all__ = ["SCHEMES", "int8_weight", "quantize_weights", "symmetric_int8"]

SCHEMES = ("q4_0", "q4_1", "q8_0", "int8")


def symmetric_int8(w: np.ndarray, axis: int, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 codes of ``w`` along ``axis`` and their float32 scales
    (max |w| / qmax; an all-zero channel gets scale 1). Rounds half to even, as QuantizeLinear."""
    w = np.asarray(w, dtype=np.float32)
    red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=red) if red else np.abs(w)
    scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    view = [1] * w.ndim
    view[axis % w.ndim] = -1
    q = np.clip(np.rint(w / scale.reshape(view)), -qmax, qmax).astype(np.int8)
    return q, scale


def _block_params(rw: Rewriter, u: WeightUse, scheme: str, pad: bool,
                  q4_1_form: str) -> dict[str, Any]:
    """Quantise one weight into matmul_nbits parameters (packed codes, fp16 scales / minima)."""
    f = FORMATS[scheme]
    w = u.matrix_nk()
    n, k = w.shape
    if k % QK and not pad:
        raise ShapeError(f"scheme {scheme!r}: weight '{u.param.name}' {u.param.value.type} has "
                         f"K={k} inputs, not a multiple of the block size {QK}", node=u.node.name,
                         op=u.node.op.name, source=u.node.source,
                         hint="pass pad=True to zero-pad the last block of each row")
    fl = block_fields(quantize_blocks(w, f, pad=True), f, (n, k))
    d = fl.d
    if f.bits == 4:
        packed = pack_nibbles_ort(fl.codes)
    else:
        packed = (fl.codes.astype(np.int16) + 128).astype(np.uint8)  # ORT's zero point 128
    out: dict[str, Any] = {"packed": rw.param(f"{u.param.name}.q", packed), "K": k, "N": n,
                           "bits": f.bits, "form": q4_1_form, "cache": {}}
    if fl.m is not None:
        if q4_1_form == "float":  # a constant block (d = 0) is m = d' (0 - zp), d' = |m| or 1
            d = np.where(d == 0, np.where(fl.m != 0, np.abs(fl.m), 1.0), d).astype(np.float16)
        out["mins"] = rw.param(f"{u.param.name}.m", fl.m)
    out["scales"] = rw.param(f"{u.param.name}.d", d)
    return out


def _nbits_inputs(rw: Rewriter, x: Value, p: dict[str, Any]) -> dict[str, Value]:
    """The values matmul_nbits (and the Q4_1 correction) read, in x's dtype, made once per
    weight: scales, and for Q4_1 either float zero points -m/d or the coefficients m + 8 d of
    the block sums of x."""
    dt = x.dtype
    if dt in p["cache"]:
        return p["cache"][dt]

    def cast(v: Value, name: str) -> Value:
        return v if v.dtype == dt else rw.emit(ops.cast, v, name=name, to=dt)

    out = {"scales": cast(p["scales"], "scales")}
    if "mins" in p:
        m = cast(p["mins"], "mins")
        if p["form"] == "float":
            ratio = rw.emit(ops.div, m, out["scales"], name="zp_ratio")
            out["zero_points"] = rw.emit(ops.neg, ratio, name="zero_points")
        else:
            eight = rw.emit(ops.constant, name="eight", value=np.asarray(8, dt.numpy))
            c = rw.emit(ops.add, m, rw.emit(ops.mul, out["scales"], eight, name="shift"),
                        name="block_offsets")
            out["offsets_t"] = rw.emit(ops.transpose, c, name="block_offsets_t", perm=(1, 0))
    p["cache"][dt] = out
    return out


def _block_sums(rw: Rewriter, x: Value, k: int) -> Value:
    """Sums of x over each block of 32 inputs: (..., K) -> (..., ceil(K / 32))."""
    r = x.ndim
    if k % QK:
        x = rw.emit(ops.pad, x, name="pad_k", pads=(0,) * (2 * r - 1) + (-k % QK,))
    nb = -(-k // QK)
    xr = rw.emit(ops.reshape, x, name="blocks", shape=(0,) * (r - 1) + (nb, QK))
    return rw.emit(ops.reduce_sum, xr, name="block_sums", axes=(-1,), keepdims=False)


def _replace_block(rw: Rewriter, u: WeightUse, p: dict[str, Any], level: int) -> None:
    """matmul_nbits in place of the node. Q4_1 in the "split" form is
    ``x @ (d (q - 8))^T + blocksums(x) @ (m + 8 d)^T``: the same d q + m, but ORT's MatMulNBits
    keeps its fast prepacked kernels (float zero points fall back to dequantising per call)."""
    n = u.node
    x = rw.current(n.inputs[0])
    assert x is not None
    vals = _nbits_inputs(rw, x, p)
    attrs = {"K": p["K"], "N": p["N"], "bits": p["bits"], "block_size": QK,
             "accuracy_level": level}
    ins: tuple[Value | None, ...] = (x, p["packed"], vals["scales"], vals.get("zero_points"))
    op = ops.matmul_nbits
    if "offsets_t" in vals:
        main = rw.emit(ops.matmul_nbits, *ins, name="matmul_nbits", **attrs)
        corr = rw.emit(ops.matmul, _block_sums(rw, x, p["K"]), vals["offsets_t"],
                       name="block_offsets_matmul")
        op, ins, attrs = ops.add, (main, corr), {}
    if n.op is ops.matmul:
        rw.emit_as(op, *ins, out=n.outputs[0], **attrs)
    else:
        rw.emit_linear(op, *ins, bias=n.inputs[2], activation=n.attrs["activation"], **attrs)


def _replace_int8(rw: Rewriter, u: WeightUse, dq: Value) -> None:
    n = u.node
    ins = [rw.subst.get(v, v) if v is not None else None for v in n.inputs]
    ins[1] = dq
    rw.emit_as(n.op, *ins, out=n.outputs[0], **n.attrs)


def int8_weight(rw: Rewriter, u: WeightUse, qmax: int = 127) -> tuple[Value, Value, int]:
    """Per-output-channel symmetric int8 parameters of a weight, in the layout its node reads:
    (codes, scales, axis of the scales). Matrices are stored (K, N) and scaled per column."""
    if u.layout == "conv":
        q, s = symmetric_int8(u.param.data, 0, qmax)
        axis = 0
    else:
        q, s = symmetric_int8(u.matrix_nk().T, 1, qmax)
        axis = 1
    qv = rw.param(f"{u.param.name}.q", q)
    return qv, rw.param(f"{u.param.name}.scale", s.astype(u.param.data.dtype)), axis


def _int8_weight(rw: Rewriter, u: WeightUse) -> Value:
    """dequantize_linear of the int8 weight, in the layout the node reads."""
    q, s, axis = int8_weight(rw, u)
    return rw.emit(ops.dequantize_linear, q, s, name="dequantize_weight", axis=axis)


def quantize_weights(graph: Graph, scheme: str = "q4_1", *,
                     kinds: Sequence[str] = ("matmul", "linear"),
                     nodes: Sequence[str] | None = None, pad: bool = True,
                     min_elements: int = 0, accuracy_level: int = 0,
                     q4_1_form: str = "split", untie: bool = False) -> PassResult:
    """Weight-only quantisation of the weight parameters of matmul / linear (/ conv) nodes.

    Args:
        graph: any graph; weights are float parameters read directly or through a 2-D
            transpose (the ``x @ W.T`` of ``F.linear``).
        scheme: "q4_0", "q4_1", "q8_0" (llama.cpp blocks of 32 along K, run as matmul_nbits)
            or "int8" (per-channel symmetric, run as dequantize_linear + the original op).
        kinds: op kinds to quantise: "matmul", "linear" and, for int8 only, "conv".
        nodes: quantise only these nodes (names); a node the scheme cannot handle raises.
        pad: zero-pad rows whose K is not a multiple of 32 (else ShapeError naming the node).
        min_elements: leave smaller weights in float.
        accuracy_level: MatMulNBits's ORT attribute (0: float compute; 4: int8 activations,
            which ORT's CPU kernels need to be fast with 8 bits).
        q4_1_form: "split" (default: codes with zero point 8 plus a block-sum correction by
            m + 8 d, fast on ORT) or "float" (float zero points -m / d, ORT's slow path).
        untie: a weight that other nodes read too (a tied embedding and vocabulary head) gets a
            quantised copy for its weight uses, the other readers keep the float original;
            without it such weights stay in float (counted as ``skipped``).

    Returns a PassResult whose stats count quantised weights and nodes and the weight bytes
    before and after; ``graph.metadata["quantization"]`` holds the same per weight.
    """
    if scheme not in SCHEMES:
        raise OpError(f"unknown weight quantisation scheme {scheme!r}; use one of {SCHEMES}")
    if q4_1_form not in ("split", "float"):
        raise OpError(f"q4_1_form must be 'split' or 'float', got {q4_1_form!r}")
    allowed = ("matmul", "linear", "conv") if scheme == "int8" else ("matmul", "linear")
    uses = [u for u in select_uses(graph, kinds, nodes, allowed, scheme)
            if u.param.data.size >= min_elements]
    if scheme != "int8":
        uses = [u for u in uses if u.node.inputs[0] is not None
                and u.node.inputs[0].dtype.name in ("float32", "float16")]
    if not uses:
        return PassResult(graph, False, {"weights": 0, "nodes": 0})
    if untie:
        untied = untie_weights(graph, uses)
        if untied is not graph:
            return quantize_weights(untied, scheme, kinds=kinds, nodes=nodes, pad=pad,
                                    min_elements=min_elements, accuracy_level=accuracy_level,
                                    q4_1_form=q4_1_form)
    skipped = len({u.param for u in uses})
    uses = only_weights(graph, uses)
    skipped -= len({u.param for u in uses})
    if not uses:
        return PassResult(graph, False, {"weights": 0, "nodes": 0, "skipped": skipped})
    by_node = {u.node: u for u in uses}
    dead_vias = dead_transposes(graph, uses)
    rw = Rewriter(graph, f"quantize_weights:{scheme}")
    done: dict[Param, Any] = {}
    report: dict[str, dict[str, Any]] = {}
    for _node, u in rw.visit(by_node, dead_vias):
        if u.param not in done:
            before = len(rw.b.params)
            done[u.param] = (_int8_weight(rw, u) if scheme == "int8"
                             else _block_params(rw, u, scheme, pad, q4_1_form))
            after = sum(p.data.nbytes for p in rw.b.params[before:])
            report[u.param.name] = {"shape": list(u.param.data.shape), "scheme": scheme,
                                    "bytes_before": int(u.param.data.nbytes),
                                    "bytes_after": int(after)}
        if scheme == "int8":
            _replace_int8(rw, u, done[u.param])
        else:
            _replace_block(rw, u, done[u.param], accuracy_level)
        rw.node = None
    new = rw.build(drop_params=done)
    before = sum(r["bytes_before"] for r in report.values())
    after = sum(r["bytes_after"] for r in report.values())
    meta = dict(new.metadata)
    meta["quantization"] = {**meta.get("quantization", {}), "weights": report,
                            "scheme": scheme, "bytes_before": before, "bytes_after": after,
                            "ratio": after / before if before else 1.0}
    stats = {"weights": len(done), "nodes": len(by_node), "skipped": skipped,
             "bytes_before": before, "bytes_after": after}
    return PassResult(new.replace(metadata=meta), True, stats)
