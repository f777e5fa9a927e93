"""Quantisation-aware training (book chapter 8): ``prepare_qat``, ``convert_qat``, ``qat_finetune``.

``prepare_qat`` puts ``fake_quantize`` on the weights of matmul / linear / conv nodes (and, with
``activations=True``, on the activations static quantisation would quantise, at the same places:
:func:`.static.plan_static`). The forward pass then computes the quantised model while the
weights stay float32 and trainable; the gradient is the straight-through estimator of
``fake_quantize``'s VJP. The weight scales follow the weights (recomputed from the current values
at every step behind ``stop_gradient``, as PyTorch's weight observers do), so after training the
real quantised weights are exactly the fake-quantised ones:

- ``per_channel_symmetric`` / ``per_tensor_symmetric``: ``s = max|W| / (2**(bits-1) - 1)`` per
  output channel or per tensor, codes in ``[-qmax, qmax]``; converted to ``dequantize_linear``
  of int8 (bits > 4) or int4 codes;
- ``q4_1_blocks`` / ``q4_0_blocks`` (bits = 4, matmul / linear only): llama.cpp's blocks of 32
  along K with fp16 scales (and Q4_1 minima) computed as :mod:`.blocks` does, converted to
  ``matmul_nbits`` as :func:`.weights.quantize_weights` emits it.

Activation ranges are calibrated once (``evaluate`` runs the graph) and then frozen; they become
the QDQ pairs of the converted graph (uint8 / int8 codes, as static quantisation uses; uint4 /
int4 ranges, for a harsher 4-bit model, stay fake quantisation). ``convert_qat(prepare_qat(g))``
without training is plain post-training quantisation with the same quantiser: the baseline QAT
is measured against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.dtypes import int4, int8
from lbdl_graph.errors import InputError, OpError
from lbdl_graph.graph import Graph, Value

from ..base import PassResult
from ._graph import Rewriter, WeightUse
from .blocks import QK, pack_nibbles_ort
from .calibrate import Batches, Evaluate, calibrate
from .static import activation_qparams, plan_static, qdq_pair, rewrite_static
from .weights import _replace_block

__all__ = ["ACTIVATION_TYPES", "WEIGHT_SCHEMES", "convert_qat", "prepare_qat", "qat_weights"]

WEIGHT_SCHEMES = ("per_channel_symmetric", "per_tensor_symmetric", "q4_1_blocks", "q4_0_blocks")
ACTIVATION_TYPES = ("uint8", "int8", "uint4", "int4")
_BLOCKS = ("q4_1_blocks", "q4_0_blocks")
F32, F16 = np.float32, np.float16


# ------------------------------------------------------------------ the quantiser, in NumPy

def _blocks_nk(w_nk: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, ceil(K/32), 32), zero-padded as llama.cpp pads a row."""
    n, k = w_nk.shape
    return np.pad(w_nk.astype(F32), ((0, 0), (0, -k % QK))).reshape(n, -1, QK)


def _f16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, F32).astype(F16).astype(F32)


def qat_weights(w: np.ndarray, scheme: str, bits: int, axis: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The codes, scales and (Q4_1) minima ``prepare_qat``'s graph quantises ``w`` to.

    Symmetric schemes: int codes of ``w``'s shape and float32 scales along ``axis`` (None: one
    scale). Block schemes: ``w`` is (N, K); uint8 codes (N, nb, 32), scales (N, nb) and Q4_1
    minima (N, nb), each exactly representable in float16.
    """
    w = np.asarray(w, F32)
    if scheme not in _BLOCKS:
        qmax = 2 ** (bits - 1) - 1
        red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
        amax = np.abs(w).max(axis=red, keepdims=True)
        s = np.where(amax > 0, amax / F32(qmax), F32(1)).astype(F32)
        q = np.clip(np.rint(w / s), -qmax, qmax)
        return q, (s.reshape(-1) if axis is not None else s.reshape(())), None
    b = _blocks_nk(w)
    lo, hi = b.min(axis=-1, keepdims=True), b.max(axis=-1, keepdims=True)
    if scheme == "q4_1_blocks":
        m = _f16(lo)
        d = _f16((hi - lo) / F32(15))
        d = np.where(d == 0, F32(1), d)
        q = np.clip(np.rint((b - m) / d), 0, 15)
        return q.astype(np.uint8), d[..., 0], m[..., 0]
    d = _f16(np.where(hi >= -lo, hi, lo) / F32(-8))
    d = np.where(d == 0, F32(1), d)
    q = np.clip(np.rint(b / d) + 8, 0, 15)
    return q.astype(np.uint8), d[..., 0], None


# ------------------------------------------------------------------ the same, as graph nodes

Emit = Callable[..., Value]  # Rewriter.emit with the prefix bound


def _const(e: Emit, value: float, name: str) -> Value:
    return e(ops.constant, name=name, value=np.asarray(value, F32))


def _fq_symmetric(e: Emit, w: Value, axis: int | None, qmax: int) -> Value:
    red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    amax = e(ops.reduce_max, e(ops.abs_, w, name="abs"), name="amax", axes=red,
             keepdims=axis is not None)
    amax = e(ops.stop_gradient, amax, name="amax_const")
    zero = _const(e, 0.0, "zero")
    s = e(ops.div, amax, _const(e, qmax, "qmax"), name="ratio")
    s = e(ops.where, e(ops.greater, amax, zero, name="nonzero"), s, _const(e, 1.0, "one"),
          name="scale")
    return e(ops.fake_quantize, w, s, zero, name="fake_quantize", qmin=-qmax, qmax=qmax)


def _f16_round(e: Emit, v: Value, name: str) -> Value:
    return e(ops.cast, e(ops.cast, v, name=f"{name}_f16", to="float16"), name=name,
             to="float32")


def _fq_blocks(e: Emit, w_nk: Value, scheme: str) -> Value:
    """Fake Q4_1 / Q4_0 of an (N, K) weight, block by block; returns (N, K)."""
    n, k = (int(d) for d in w_nk.shape)
    nb = -(-k // QK)
    x = w_nk if k % QK == 0 else e(ops.pad, w_nk, name="pad_k", pads=(0, 0, 0, -k % QK))
    x = e(ops.reshape, x, name="blocks", shape=(n, nb, QK))
    lo = e(ops.stop_gradient, e(ops.reduce_min, x, name="block_min", axes=(-1,),
                                keepdims=True), name="block_min_const")
    hi = e(ops.stop_gradient, e(ops.reduce_max, x, name="block_max", axes=(-1,),
                                keepdims=True), name="block_max_const")
    zero = _const(e, 0.0, "zero")
    if scheme == "q4_1_blocks":
        m = _f16_round(e, lo, "m")
        d = e(ops.div, e(ops.sub, hi, lo, name="span"), _const(e, 15.0, "fifteen"), name="d32")
        start, zp = e(ops.sub, x, m, name="shifted"), zero
    else:
        pos = e(ops.greater_equal, hi, e(ops.neg, lo, name="neg_min"), name="pos")
        d = e(ops.div, e(ops.where, pos, hi, lo, name="absmax"), _const(e, -8.0, "minus_eight"),
              name="d32")
        start, zp = x, _const(e, 8.0, "eight")
    d = _f16_round(e, d, "d")
    d = e(ops.where, e(ops.equal, d, zero, name="flat"), _const(e, 1.0, "one"), d, name="scale")
    y = e(ops.fake_quantize, start, d, zp, name="fake_quantize", qmin=0, qmax=15)
    if scheme == "q4_1_blocks":
        y = e(ops.add, y, m, name="plus_min")
    y = e(ops.reshape, y, name="rows", shape=(n, nb * QK))
    if k % QK:
        y = e(ops.slice_, y, name="cut_k", starts=(0,), ends=(k,), axes=(1,))
    return y


def _fq_weight(rw: Rewriter, u: WeightUse, scheme: str, bits: int) -> Value:
    """The fake-quantised weight in the layout ``u.node`` reads ((K, N) or the conv's), made of
    nodes named ``<param>/qat/...``."""
    def e(op: Any, *inputs: Value | None, name: str, **attrs: Any) -> Value:
        return rw.emit(op, *inputs, name=name, prefix=f"{u.param.name}/qat", **attrs)

    w = u.param.value
    if scheme in _BLOCKS:
        nk = w if u.layout == "nk" else e(ops.transpose, w, name="to_nk", perm=(1, 0))
        return e(ops.transpose, _fq_blocks(e, nk, scheme), name="to_kn", perm=(1, 0))
    axis = None if scheme == "per_tensor_symmetric" else (0 if u.layout in ("nk", "conv") else 1)
    y = _fq_symmetric(e, w, axis, 2 ** (bits - 1) - 1)
    return e(ops.transpose, y, name="to_kn", perm=(1, 0)) if u.layout == "nk" else y


# ------------------------------------------------------------------ prepare / convert

def _check(bits: int, scheme: str, activations: bool, activation_type: str) -> None:
    if scheme not in WEIGHT_SCHEMES:
        raise OpError(f"unknown QAT weight scheme {scheme!r}; use one of {WEIGHT_SCHEMES}")
    if scheme in _BLOCKS and bits != 4:
        raise OpError(f"weight scheme {scheme!r} has 4-bit codes, got bits={bits}")
    if not 2 <= bits <= 8:
        raise OpError(f"bits must be in 2..8, got {bits}")
    if activations and scheme in _BLOCKS:
        raise OpError(f"weight scheme {scheme!r} runs as MatMulNBits on float activations; "
                      "activation fake quantisation needs a symmetric weight scheme")
    if activation_type not in ACTIVATION_TYPES:
        raise OpError(f"activation_type must be one of {ACTIVATION_TYPES}, got "
                      f"{activation_type!r}")


def _act_qparams(lo: float, hi: float, activation_type: str) -> tuple[float, int, int, int]:
    """(scale, zero point, qmin, qmax) of an activation range: asymmetric for unsigned codes,
    symmetric (zero point 0, the lowest code unused) for signed ones."""
    if activation_type in ("uint8", "int8"):
        scale, zp = activation_qparams(lo, hi, activation_type)
        return float(scale), zp, *((0, 255) if activation_type == "uint8" else (-128, 127))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if activation_type == "int4":
        a = max(-lo, hi)
        return (float(np.float32(a / 7)) if a > 0 else 1.0), 0, -8, 7
    s = float(np.float32((hi - lo) / 15)) if hi > lo else 1.0
    return s, int(np.clip(np.rint(-lo / s), 0, 15)), 0, 15


def prepare_qat(graph: Graph, *, bits: int = 8, weight_scheme: str = "per_channel_symmetric",
                kinds: Sequence[str] | None = None, nodes: Sequence[str] | None = None,
                activations: bool = False, calibration_data: Batches | None = None,
                evaluate: Evaluate | None = None, method: str = "minmax",
                activation_type: str = "uint8") -> PassResult:
    """Insert fake quantisation for QAT (see the module docstring); any graph, a model+loss
    traced in training mode included. ``activations=True`` needs ``calibration_data`` and
    ``evaluate`` (as :func:`.static.quantize_static`). The plan is kept in
    ``graph.metadata["qat"]`` for :func:`convert_qat`; a prepared graph is left as it is."""
    _check(bits, weight_scheme, activations, activation_type)
    if "qat" in graph.metadata:
        return PassResult(graph, False, {"nodes": 0, "weights": 0, "activations": 0})
    if kinds is None:
        kinds = ("matmul", "linear") if weight_scheme in _BLOCKS else ("matmul", "linear", "conv")
    if weight_scheme in _BLOCKS and "conv" in kinds:
        raise OpError(f"weight scheme {weight_scheme!r} does not apply to conv weights")
    if activations and (calibration_data is None or evaluate is None):
        raise InputError("activations=True needs calibration_data and evaluate to fix the "
                         "activation ranges")
    graph, plan = plan_static(graph, kinds, nodes, activations=activations)
    if not plan.targets:
        return PassResult(graph, False, {"nodes": 0, "weights": 0, "activations": 0})
    ranges = {}
    if activations:
        assert calibration_data is not None and evaluate is not None
        ranges = calibrate(graph, plan.activations, calibration_data, evaluate, method=method)
    acts: dict[str, dict[str, Any]] = {}
    weights: dict[str, Value] = {}
    helpers: list[str] = []

    def act(rw: Rewriter, v: Value) -> Value:
        s, zp, qmin, qmax = _act_qparams(*ranges[v.name], activation_type)
        sv = rw.param(f"{v.name}.qat_scale", np.asarray(s, v.dtype.numpy))
        zv = rw.param(f"{v.name}.qat_zero_point", np.asarray(zp, v.dtype.numpy))
        out = rw.emit(ops.fake_quantize, v, sv, zv, name="fake_quantize", prefix=v.name,
                      qmin=qmin, qmax=qmax)
        acts[rw.b.nodes[-1].name] = {"value": v.name, "scale": sv.name, "zero_point": zv.name}
        return out

    def weight(rw: Rewriter, u: WeightUse) -> Value:
        key = f"{u.param.name}:{u.layout}"
        if key not in weights:
            first = len(rw.b.nodes)
            weights[key] = _fq_weight(rw, u, weight_scheme, bits)
            helpers.extend(n.name for n in rw.b.nodes[first:])
        return weights[key]

    new = rewrite_static(graph, plan, act, weight, "prepare_qat:fake_quantize")
    meta = dict(new.metadata)
    meta["qat"] = {"bits": bits, "weight_scheme": weight_scheme,
                   "activation_type": activation_type, "activations": acts,
                   "targets": {n.name: [u.param.name, u.layout] if u else None
                               for n, u in plan.targets},
                   "helpers": helpers}
    stats = {"nodes": len(plan.targets), "weights": len(weights), "activations": len(acts)}
    return PassResult(new.replace(metadata=meta), True, stats)


def _dq_weight(rw: Rewriter, u: WeightUse, scheme: str, bits: int) -> Value:
    """``dequantize_linear`` of the weight's codes (int4 up to 4 bits, else int8), in the layout
    the node reads: (K, N) scaled per column, or the conv's scaled along axis 0."""
    axis = None if scheme == "per_tensor_symmetric" else (0 if u.layout in ("nk", "conv") else 1)
    q, s, _ = qat_weights(u.param.data, scheme, bits, axis)
    if u.layout == "nk":
        q = q.T
        axis = None if axis is None else 1
    codes = q.astype(np.int8).astype((int4 if bits <= 4 else int8).numpy)
    name = u.param.name
    scale = rw.param(f"{name}.scale", s.astype(u.param.data.dtype))
    return rw.emit(ops.dequantize_linear, rw.param(f"{name}.q", codes), scale, axis=axis or 0,
                   name="dequantize", prefix=name)


def _nbits_weight(rw: Rewriter, u: WeightUse, scheme: str, bits: int) -> dict[str, Any]:
    """The matmul_nbits parameters of a weight: Q4_x blocks as ``quantize_weights`` stores them,
    or symmetric codes shifted by 2**(nbits-1) (MatMulNBits's default zero point; 4-bit up to
    4 bits, else 8-bit) with their float32 scale repeated for every block of 32."""
    w = u.matrix_nk()
    n, k = w.shape
    name = u.param.name
    if scheme in _BLOCKS:
        codes, d, m = qat_weights(w, scheme, 4, None)
        p: dict[str, Any] = {"packed": rw.param(f"{name}.q", pack_nibbles_ort(codes)),
                             "bits": 4, "scales": rw.param(f"{name}.d", d.astype(F16))}
        if m is not None:
            p["mins"] = rw.param(f"{name}.m", m.astype(F16))
    else:
        nbits = 4 if bits <= 4 else 8
        q, s, _ = qat_weights(w, scheme, bits, None if scheme == "per_tensor_symmetric" else 0)
        codes = _blocks_nk(q + 2 ** (nbits - 1)).astype(np.uint8)  # pads with code 0: cut off
        packed = pack_nibbles_ort(codes) if nbits == 4 else codes
        scales = np.broadcast_to(s.reshape(-1, 1), (n, codes.shape[1])).astype(F32)
        p = {"packed": rw.param(f"{name}.q", packed), "bits": nbits,
             "scales": rw.param(f"{name}.scale", scales)}
    return {**p, "K": k, "N": n, "form": "split", "cache": {}}


def convert_qat(graph: Graph, *, accuracy_level: int = 0) -> PassResult:
    """The real quantised inference graph of a :func:`prepare_qat` graph (trained or not), which
    computes what the prepared graph computed:

    - matmul / linear weights become ``matmul_nbits`` (4-bit codes up to 4 bits, else 8-bit;
      ``accuracy_level`` as in ``quantize_weights``: 0 computes in float, as the prepared graph
      does), except with 8-bit activations, where they are int8 / int4 codes behind
      ``dequantize_linear`` next to the activation QDQ pairs (ORT's integer kernels). A bare
      DequantizeLinear -> MatMul would be fused by ONNX Runtime 1.31 into a MatMulNBits with
      int8 activations (0.4 % off for an int8 MLP, measured), another function;
    - conv weights are int8 / int4 codes behind ``dequantize_linear``;
    - 8-bit activation fake quantisation becomes quantize_linear -> dequantize_linear with the
      same frozen parameters. 4-bit
    activations keep their ``fake_quantize`` nodes (float ops): no CPU kernel takes 4-bit
    activations, and ONNX Runtime 1.31 builds invalid models from 4-bit activation QDQ pairs
    (its QDQ propagation moves a 4-bit DequantizeLinear past MaxPool)."""
    meta = graph.metadata.get("qat")
    if not meta:
        raise OpError(f"graph '{graph.name}' has no QAT plan (metadata['qat']); "
                      "run prepare_qat on it first")
    scheme, bits = meta["weight_scheme"], int(meta["bits"])
    helpers, acts, targets = set(meta["helpers"]), meta["activations"], meta["targets"]
    int8_acts = bool(acts) and meta["activation_type"] in ("uint8", "int8")
    params = graph.param_map
    rw = Rewriter(graph, f"convert_qat:{scheme}")
    done: dict[str, Any] = {}
    drop = []
    for node in graph.nodes:
        if node.name in helpers:
            continue
        rw.node = node
        if node.name in acts and meta["activation_type"] in ("uint8", "int8"):
            a = acts[node.name]
            x = rw.current(node.inputs[0])
            assert x is not None
            zp = int(np.rint(params[a["zero_point"]].data))
            rw.subst[node.outputs[0]] = qdq_pair(rw, x, float(params[a["scale"]].data), zp,
                                                 meta["activation_type"])
            drop += [params[a["scale"]], params[a["zero_point"]]]
        elif targets.get(node.name) is not None:
            pname, layout = targets[node.name]
            u = WeightUse(node, params[pname], layout)
            drop.append(u.param)
            key = f"{pname}:{layout}"
            if scheme in _BLOCKS or (u.layout != "conv" and not int8_acts):
                if key not in done:
                    done[key] = _nbits_weight(rw, u, scheme, bits)
                _replace_block(rw, u, done[key], accuracy_level)
            else:
                if key not in done:
                    done[key] = _dq_weight(rw, u, scheme, bits)
                ins = [rw.subst.get(v, v) if v is not None else None for v in node.inputs]
                ins[1] = done[key]
                rw.emit_as(node.op, *ins, out=node.outputs[0], **node.attrs)
        else:
            rw.keep(node)
        rw.node = None
    new = rw.build(drop_params=drop)
    info = {k: meta[k] for k in ("bits", "weight_scheme", "activation_type")}
    info["weights"] = sorted({t[0] for t in targets.values() if t is not None})
    info["activations"] = sorted(a["value"] for a in acts.values())
    new_meta = {k: v for k, v in new.metadata.items() if k != "qat"}
    new_meta["quantization"] = {**new_meta.get("quantization", {}), "qat": info}
    stats = {"nodes": len(targets), "weights": len(done), "activations": len(acts)}
    return PassResult(new.replace(metadata=new_meta), True, stats)
