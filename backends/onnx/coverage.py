"""Pre-flight kernel coverage: which nodes of an ONNX model a provider has no kernel for.

ONNX Runtime picks a kernel per node by (domain, op type, opset, element types) when a session is
created, and fails there, or (CUDA) falls back to the CPU, where it has none. ORT's Python API
exposes no kernel registry, so :func:`check_coverage` asks it: every distinct (op × opset ×
dtypes) of the model is built as a single-node model and a session is created on the provider
alone (CUDA with CPU fallback disabled). Answers are cached per ORT version and provider in
``$LBDL_GRAPH_CACHE_DIR`` (default ``$XDG_CACHE_HOME/lbdl-graph`` or ``~/.cache/lbdl-graph``).
A provider that this ORT build or machine cannot create a session on cannot be queried: that is
:class:`ProviderUnavailable`, not a guess.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import ModelProto, NodeProto, TensorProto, helper

from lbdl_graph.errors import OnnxError

__all__ = ["PROVIDERS", "Coverage", "NodeGap", "ProviderUnavailable", "cache_path",
           "check_coverage"]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_SMALL = 4096  # initializers up to this many elements are copied into the probe as constants
_MISSING_MARK = ("Could not find an implementation", "NOT_IMPLEMENTED",
                 "not supported by", "requires the node to be assigned")


class ProviderUnavailable(OnnxError):
    """The provider's kernel registry cannot be queried here (not built in, no device)."""


@dataclass(frozen=True)
class NodeGap:
    """A node whose (op, opset, dtypes) the provider has no kernel for (or could not probe)."""

    node: str
    op: str
    domain: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    reason: str


@dataclass
class Coverage:
    """The result of one check: gaps, nodes that could not be probed, and the probe counts."""

    provider: str
    ort_version: str
    nodes: int
    missing: list[NodeGap] = field(default_factory=list)
    unprobed: list[NodeGap] = field(default_factory=list)
    probed: int = 0
    cached: int = 0


def cache_path(provider: str) -> Path:
    """The cache file of ``provider`` for this ORT version."""
    root = os.environ.get("LBDL_GRAPH_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "lbdl-graph"
    return base / f"ort-{ort.__version__}-{provider}-kernels.json"


def _load_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: probe again and rewrite it
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return {}
    return data


def _save_cache(path: Path, data: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kernels-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory only costs the probes next time


def _type_name(elem: int) -> str:
    return "?" if elem == 0 else str(helper.tensor_dtype_to_np_dtype(elem)) if elem not in (
        TensorProto.BFLOAT16, TensorProto.STRING) else TensorProto.DataType.Name(elem).lower()


def _elem_types(model: ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference gives up on some models; what it can't type stays unknown
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {t.name: t.data_type for t in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _has_subgraph(node: NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute)


def _probe_model(node: NodeProto, types: dict[str, int], opsets: dict[str, int],
                 consts: dict[str, TensorProto], ir_version: int) -> ModelProto:
    inputs, inits = [], []
    for i, name in enumerate(node.input):
        if not name:
            continue
        if name in consts:
            t = TensorProto()
            t.CopyFrom(consts[name])
            t.name = f"in{i}"
            inits.append(t)
        else:
            inputs.append(helper.make_tensor_value_info(f"in{i}", types[name], None))
    outs = [helper.make_tensor_value_info(f"out{i}", types[n], None) if types.get(n)
            else helper.make_empty_tensor_value_info(f"out{i}")
            for i, n in enumerate(node.output) if n]
    probe = helper.make_node(node.op_type, [f"in{i}" if n else "" for i, n in
                                            enumerate(node.input)],
                             [f"out{i}" if n else "" for i, n in enumerate(node.output)],
                             domain=node.domain or None, name="probe")
    probe.attribute.extend(node.attribute)
    g = helper.make_graph([probe], "probe", inputs, outs, initializer=inits)
    ops = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    return helper.make_model(g, opset_imports=ops, ir_version=ir_version)


def _probe(model: ModelProto, provider: str) -> str:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if provider != "CPUExecutionProvider":
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        ort.InferenceSession(model.SerializeToString(), so, providers=[provider])
    except Exception as e:  # ORT raises its own Fail/NotImplemented/InvalidGraph types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", msg)
        msg = re.sub(r" node with name 'probe'", "", msg)
        return ("missing: " if any(m in str(e) for m in _MISSING_MARK) else "error: ") + msg
    return "ok"


def provider_status(provider: str) -> str | None:
    """None if ``provider`` ("cpu" or "cuda") can be queried here, else why not."""
    name = PROVIDERS[provider]
    avail = ort.get_available_providers()
    if name not in avail:
        return (f"{name} is not available in this onnxruntime {ort.__version__} build (it has "
                f"{', '.join(avail)}), so its kernel registry cannot be queried here; run the "
                "check where onnxruntime-gpu and a CUDA device are installed")
    if provider == "cuda":
        from .runner import cuda_available

        if not cuda_available():
            return (f"{name} is built into onnxruntime {ort.__version__} but no session can be "
                    "created on it (no CUDA device, driver or cuDNN), so its kernel registry "
                    "cannot be queried here")
    return None


def _iter_nodes(model: ModelProto) -> Iterator[NodeProto]:
    yield from model.graph.node


def check_coverage(model: ModelProto, provider: str = "cpu", *,
                   use_cache: bool = True) -> Coverage:
    """List the nodes of ``model`` that ``provider`` ("cpu" or "cuda") has no kernel for."""
    if provider not in PROVIDERS:
        raise OnnxError(f"unknown provider {provider!r}; use one of {sorted(PROVIDERS)}")
    why = provider_status(provider)
    if why is not None:
        raise ProviderUnavailable(why)
    name = PROVIDERS[provider]
    opsets = {o.domain: o.version for o in model.opset_import}
    opsets.setdefault("", 1)
    types = _elem_types(model)
    consts = {t.name: t for t in model.graph.initializer
              if t.data_location != TensorProto.EXTERNAL
              and int(_numel(t)) <= _SMALL}
    path = cache_path(provider)
    cache = _load_cache(path) if use_cache else {}
    res = Coverage(name, ort.__version__, len(model.graph.node))
    dirty = False
    for node in _iter_nodes(model):
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        opset = opsets.get(domain, opsets.get("ai.onnx", 1)) if domain else opsets[""]
        ins = tuple(_type_name(types.get(n, 0)) if n else "" for n in node.input)
        outs = tuple(_type_name(types.get(n, 0)) for n in node.output if n)

        def gap(reason: str, node: NodeProto = node, domain: str = domain, opset: int = opset,
                ins: tuple[str, ...] = ins, outs: tuple[str, ...] = outs) -> NodeGap:
            return NodeGap(node.name or node.output[0], node.op_type, domain, opset, ins, outs,
                           reason)

        if _has_subgraph(node):
            res.unprobed.append(gap("has a subgraph attribute (not probed alone)"))
            continue
        if "?" in ins or any(n and n not in types for n in node.input):
            res.unprobed.append(gap("an input's element type is unknown"))
            continue
        key = f"{domain}|{node.op_type}|{opset}|{','.join(ins)}|{','.join(outs)}"
        answer = cache.get(key)
        if answer is None:
            answer = _probe(_probe_model(node, types, opsets, consts, model.ir_version), name)
            cache[key] = answer
            res.probed += 1
            dirty = True
        else:
            res.cached += 1
        if answer.startswith("missing: "):
            res.missing.append(gap(answer[len("missing: "):]))
        elif answer.startswith("error: "):
            res.unprobed.append(gap("probe failed: " + answer[len("error: "):]))
    if dirty and use_cache:
        _save_cache(path, cache)
    return res


def _numel(t: TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n
