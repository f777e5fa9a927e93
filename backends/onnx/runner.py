"""Run graphs on ONNX Runtime: provider choice, input checks and error mapping.

The CUDA provider is listed by onnxruntime-gpu even on machines without a usable GPU, where ORT
then logs loudly and falls back to the CPU. :func:`cuda_available` probes once, quietly, whether a
session really gets the CUDA provider. ORT's default logger is set to errors-only, so creating a
session prints nothing.

ORT failures (an invalid model, a run-time shape error, a missing kernel) become
:class:`~lbdl_graph.errors.OnnxError` naming the IR node and its source line: ONNX node names are
IR node names and every exported node records its IR node.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import ModelProto, TensorProto, helper

from lbdl_graph.dtypes import DType, dtype
from lbdl_graph.errors import DTypeError, InputError, OnnxError, ResourceError
from lbdl_graph.graph import Graph, Node
from lbdl_graph.shapes import Dim
from lbdl_graph.source import SourceLoc

from .export import DEFAULT_OPSET, export_graph, load_onnx_model
from .provenance import load_sidecar

__all__ = [
    "HOST_TYPES",
    "OrtRunner",
    "check_inputs",
    "cuda_available",
    "env_threads",
    "input_specs",
    "resolve_providers",
    "run_onnxruntime",
    "to_host",
    "translate_error",
]

_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
_QUIET = 3  # ORT severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_SILENT = 4


@functools.cache
def _quiet_ort() -> None:
    """Errors-only default logger: the CUDA-library fallback warnings go through it."""
    ort.set_default_logger_severity(_QUIET)


@functools.cache
def cuda_available() -> bool:
    """True if a session created with the CUDA provider really runs on it (probed once)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", 1, [1])],
                          [helper.make_tensor_value_info("y", 1, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.log_severity_level = _SILENT
    # a failed CUDA library load is logged as an error: only fatal messages during the probe
    ort.set_default_logger_severity(_SILENT)
    try:
        s = ort.InferenceSession(m.SerializeToString(), so,
                                 providers=["CUDAExecutionProvider"])
    except Exception:  # no driver, missing CUDA/cuDNN libraries, ...
        return False
    finally:
        ort.set_default_logger_severity(_QUIET)
    return "CUDAExecutionProvider" in s.get_providers()


def resolve_providers(providers: str | Sequence[Any] | None) -> list[Any]:
    """None: CUDA if it really works, else CPU; "cpu"/"cuda"; or an explicit ORT list."""
    if providers is None:
        providers = "cuda" if cuda_available() else "cpu"
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "cuda":
        if not cuda_available():
            raise OnnxError("the CUDA execution provider is not usable on this machine",
                            hint="use providers='cpu' or None (automatic)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if isinstance(providers, str):
        raise OnnxError(f"unknown providers {providers!r}; use None, 'cpu', 'cuda' or a list")
    return list(providers)


# ---------------------------------------------------------------- error mapping

_NODE_PATTERNS = (
    re.compile(r"Name:'([^']*)'"),
    re.compile(r"[Nn]ode \(([^)]*)\)"),
    re.compile(r"In Node, \(\"([^\"]*)\""),
    re.compile(r"node (?:name )?'([^']*)'"),
)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_CPP_LOC = re.compile(r"\S*onnxruntime_src\S*:\d+\s+(?:[\w:~<>,* &]+\([^)]*\)\s*(?:const\s*)?)?")


@dataclass(frozen=True)
class NodeInfo:
    """Where an ONNX node came from: IR node name, op and the user's source line."""

    name: str
    op: str
    source: SourceLoc | None


def _parse_source(text: str | bytes) -> SourceLoc | None:
    if not isinstance(text, str):  # a corrupt file's doc string that is not UTF-8
        return None
    m = re.match(r"^(.*):(\d+)(?: in (.*))?$", text)
    return SourceLoc(m.group(1), int(m.group(2)), m.group(3) or "") if m else None


def node_infos(model: ModelProto, node_map: Mapping[str, Node] | None = None
               ) -> dict[str, NodeInfo]:
    """ONNX node name -> NodeInfo, from an export's node map or the nodes' own metadata."""
    if node_map is not None:
        return {k: NodeInfo(n.name, n.op.name, n.source) for k, n in node_map.items()}
    out: dict[str, NodeInfo] = {}
    for n in model.graph.node:
        props = {p.key: p.value for p in n.metadata_props}
        out[n.name] = NodeInfo(props.get("lbdl.node", n.name), props.get("lbdl.op", n.op_type),
                               _parse_source(n.doc_string))
    return out


def _lookup(name: str, nodes: Mapping[str, NodeInfo]) -> NodeInfo | None:
    """The node ``name`` names; ORT's fusions name their node ``<first node>/<Fusion>``."""
    while name:
        if name in nodes:
            return nodes[name]
        name = name.rpartition("/")[0]
    return None


def translate_error(e: Exception, nodes: Mapping[str, NodeInfo], when: str) -> OnnxError:
    """An ORT exception as an OnnxError naming the IR node (when the message names one)."""
    raw = str(e)
    msg = _CPP_LOC.sub("", _ORT_PREFIX.sub("", raw.strip())).strip()
    found = None
    for pat in _NODE_PATTERNS:
        for m in pat.finditer(raw):
            if (found := _lookup(m.group(1), nodes)) is not None:
                break
        if found:
            break
    if found is None:  # fall back to any node name quoted in the message, longest first
        for name in sorted(nodes, key=len, reverse=True):
            if f"'{name}'" in raw or f'"{name}"' in raw or f"({name})" in raw:
                found = nodes[name]
                break
    alloc = _ALLOC_FAILED.search(raw)
    if alloc is not None:  # ORT's arena could not allocate: the same error as the NumPy path
        nbytes = int(alloc.group(1) or 0)
        where = {"node": found.name, "op": found.op, "source": found.source} if found else {}
        return OnnxResourceError(
            f"ONNX Runtime {when} failed: a tensor needs {nbytes:,} bytes or more, more than "
            f"it can allocate ({msg})", nbytes=nbytes,
            hint="shrink the inputs or the bound dims", **where)
    if found is None:
        return OnnxError(f"ONNX Runtime {when} failed: {msg}")
    return OnnxError(f"ONNX Runtime {when} failed: {msg}", node=found.name, op=found.op,
                     source=found.source)


_ALLOC_FAILED = re.compile(r"(?:Failed to allocate memory for requested buffer of size|would "
                           r"require more than) (\d+)|bad_alloc|out of memory", re.IGNORECASE)


class OnnxResourceError(ResourceError, OnnxError):
    """ORT could not allocate a tensor: a ResourceError that is also an OnnxError."""


# ---------------------------------------------------------------- input specs

InputSpec = tuple[str, DType, tuple[Dim | None, ...]]


def _np_dtype(elem: int) -> np.dtype[Any] | None:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, TypeError, ValueError):
        return None


def value_spec(vi: Any) -> InputSpec:
    """(name, dtype, dims) of an ONNX ValueInfo; unknown dims are None."""
    tt = vi.type.tensor_type
    try:
        dt = dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except (DTypeError, KeyError, TypeError, ValueError):
        raise OnnxError(f"input '{vi.name}' has an unsupported element type {tt.elem_type}"
                        ) from None
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in tt.shape.dim)
    return vi.name, dt, dims


def input_specs(model: ModelProto) -> list[InputSpec]:
    """(name, dtype, dims) of the model's inputs that have no initializer (required ones)."""
    inits = {t.name for t in model.graph.initializer}
    return [value_spec(vi) for vi in model.graph.input if vi.name not in inits]


def check_inputs(specs: Sequence[InputSpec], inputs: Mapping[str, Any], graph_name: str,
                 optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Validate run-time inputs (names, dtypes, ranks, static and symbolic dims)."""
    names = {n for n, _, _ in specs}
    unknown = sorted(set(inputs) - names - set(optional))
    if unknown:
        raise InputError(f"unknown input(s) {unknown} for graph '{graph_name}'; expected "
                         f"{sorted(names)}")
    feeds: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[int, str]] = {}
    for name, dt, shape in specs:
        if name not in inputs:
            raise InputError(f"missing input '{name}' ({dt.short}{list(shape)}) for graph "
                             f"'{graph_name}'")
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr, dtype=dt.numpy)
        if arr.dtype != dt.numpy:
            raise InputError(f"input '{name}' expects dtype {dt.name}, got {arr.dtype}",
                             hint=f"convert with .astype({dt.name})")
        if arr.ndim != len(shape):
            raise InputError(f"input '{name}' expects rank {len(shape)} {list(shape)}, got "
                             f"shape {list(arr.shape)}")
        for d, n in zip(shape, arr.shape, strict=True):
            if isinstance(d, int) and d != n:
                raise InputError(f"input '{name}' expects shape {list(shape)}, got "
                                 f"{list(arr.shape)}")
            if isinstance(d, str):
                if d in dims and dims[d][0] != n:
                    raise InputError(f"dim {d} is {dims[d][0]} in input '{dims[d][1]}' but {n} "
                                     f"in input '{name}' (shape {list(arr.shape)})")
                dims.setdefault(d, (n, name))
        feeds[name] = arr
    for name in optional:
        if name in inputs:
            feeds[name] = np.asarray(inputs[name])
    return feeds


# ---------------------------------------------------------------- host exchange

# element types ORT's Python binding cannot hand to or take from NumPy, and the host type used
# instead (the conversion is exact both ways)
HOST_TYPES = {
    TensorProto.BFLOAT16: TensorProto.FLOAT, TensorProto.FLOAT8E4M3FN: TensorProto.FLOAT,
    TensorProto.INT4: TensorProto.INT8, TensorProto.UINT4: TensorProto.UINT8,
}


def _host_exchange(model: ModelProto) -> tuple[ModelProto, dict[str, str]]:
    """A copy of ``model`` whose inputs and outputs of those types are cast at the boundary.

    Returns the model and a map from each graph output name to the name the user sees."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    if not any(vi.type.tensor_type.elem_type in HOST_TYPES for vi in [*g.input, *g.output]
               if vi.name not in inits):
        return model, {o.name: o.name for o in g.output}
    m = ModelProto()
    m.CopyFrom(model)
    g = m.graph
    first: list[Any] = []
    for vi in g.input:
        elem = vi.type.tensor_type.elem_type
        if vi.name in inits or elem not in HOST_TYPES:
            continue
        native = f"{vi.name}::native"
        for n in g.node:
            n.input[:] = [native if i == vi.name else i for i in n.input]
        first.append(helper.make_node("Cast", [vi.name], [native], name=f"{vi.name}::cast",
                                      to=elem))
        vi.type.tensor_type.elem_type = HOST_TYPES[elem]
    names: dict[str, str] = {}
    for o in g.output:
        elem = o.type.tensor_type.elem_type
        user = o.name
        if elem in HOST_TYPES and user not in {vi.name for vi in g.input}:
            host = f"{user}::host"
            g.node.append(helper.make_node("Cast", [user], [host], name=f"{user}::cast",
                                           to=HOST_TYPES[elem]))
            o.name, o.type.tensor_type.elem_type = host, HOST_TYPES[elem]
        names[o.name] = user
    nodes = [*first, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return m, names


def to_host(arr: np.ndarray) -> np.ndarray:
    """Arrays ORT's binding cannot take, as their exact host type."""
    if arr.dtype.name in ("bfloat16", "float8_e4m3fn"):
        return arr.astype(np.float32)
    if arr.dtype.name in ("int4", "uint4"):
        return arr.astype(np.int8 if arr.dtype.name == "int4" else np.uint8)
    return arr


def env_threads() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` asks for (its first entry, as OpenMP reads a list
    such as "4,2"), or None when it is unset or not a positive integer (OpenMP ignores such
    values too)."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def _serialize(model: ModelProto) -> bytes:
    if model.ByteSize() > 2**31 - 1:
        raise OnnxError(f"model '{model.graph.name}' is over 2 GB",
                        hint="save it with save_onnx(..., external_data=True) and run the path")
    return model.SerializeToString()


# ---------------------------------------------------------------- runner


class OrtRunner:
    """A graph (or ONNX model, or path to one) compiled into an ONNX Runtime session.

    Args:
        graph_or_model: a Graph (exported with ``export_options``), a ModelProto or a path.
        providers: None (CUDA if it really works, else CPU), "cpu", "cuda" or an ORT list.
        optimization: "all", "extended", "basic" or "disable".
        intra_op_threads: threads per op (None: ``OMP_NUM_THREADS`` when it is set to a
            positive count, as NumPy's BLAS and PyTorch read it, else ORT's default of one per
            core, whose spinning workers burn CPU time while a small model waits for them).
        session_options: extra session settings: a key naming a ``SessionOptions`` attribute
            sets it (``{"enable_profiling": True, "profile_file_prefix": "/tmp/p"}``), a dotted
            key is a session config entry (``{"session.intra_op.allow_spinning": "0"}``).
    """

    def __init__(self, graph_or_model: Graph | ModelProto | str | os.PathLike[str], *,
                 providers: str | Sequence[Any] | None = None, optimization: str = "all",
                 intra_op_threads: int | None = None,
                 session_options: Mapping[str, Any] | None = None,
                 **export_options: Any) -> None:
        if optimization not in _LEVELS:
            raise OnnxError(f"unknown optimization {optimization!r}; use one of {list(_LEVELS)}")
        _quiet_ort()
        if export_options and not isinstance(graph_or_model, Graph):
            raise OnnxError(f"export options {sorted(export_options)} only apply to a Graph")
        source: bytes | str
        if isinstance(graph_or_model, Graph):
            export_options.setdefault("opset", DEFAULT_OPSET)
            ex = export_graph(graph_or_model, **export_options)
            self.model, self.name = ex.model, graph_or_model.name
            self.nodes = node_infos(ex.model, ex.node_map)
            source = _serialize(ex.model)
        elif isinstance(graph_or_model, ModelProto):
            self.model, self.name = graph_or_model, graph_or_model.graph.name
            self.nodes = node_infos(graph_or_model)
            source = _serialize(graph_or_model)
        else:  # a file: check it (and its external data locations), let ORT read the weights
            path = Path(graph_or_model)
            self.model = load_onnx_model(path, load_external_data=False)
            self.name = self.model.graph.name
            self.nodes = node_infos(self.model)
            side = load_sidecar(path)
            if side is not None:  # a model saved with provenance=False
                self.nodes.update({k: NodeInfo(v.get("node", k), v.get("op", "?"),
                                               _parse_source(v.get("source", "")))
                                   for k, v in side.items()})
            source = str(path)
        self.specs = input_specs(self.model)
        inits = {t.name for t in self.model.graph.initializer}
        self.overridable = [vi.name for vi in self.model.graph.input if vi.name in inits]
        session_model, self.output_map = _host_exchange(self.model)
        if session_model is not self.model:
            if isinstance(source, str):
                session_model = _host_exchange(load_onnx_model(source))[0]
            source = _serialize(session_model)
        self._user_dtypes = {o.name: spec_dtype for o in self.model.graph.output
                             if (spec_dtype := _np_dtype(o.type.tensor_type.elem_type))}
        # session output name -> the name the user sees (they differ after a host exchange)
        self.session_outputs = list(self.output_map)
        self.output_names = list(self.output_map.values())
        so = ort.SessionOptions()
        so.log_severity_level = _SILENT  # failures surface as exceptions, translated below
        so.graph_optimization_level = _LEVELS[optimization]
        if intra_op_threads is None:
            intra_op_threads = env_threads()
        if intra_op_threads is not None:
            so.intra_op_num_threads = intra_op_threads
        _apply_session_options(so, session_options or {})
        try:
            self.session = ort.InferenceSession(source, so,
                                                providers=resolve_providers(providers))
        except OnnxError:
            raise
        except Exception as e:
            raise translate_error(e, self.nodes, "session creation") from None

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses."""
        return list(self.session.get_providers())

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate inputs against the model's declared inputs; returns the ORT feeds."""
        return check_inputs(self.specs, inputs, self.name, self.overridable)

    def run(self, inputs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run once; returns every graph output by name."""
        feeds = {k: to_host(v) for k, v in self.check_inputs(inputs or {}).items()}
        try:
            outs = self.session.run(self.session_outputs, feeds)
        except Exception as e:
            raise translate_error(e, self.nodes, "run") from None
        return {name: self.from_host(name, a) for name, a in zip(self.output_names, outs,
                                                                   strict=True)}

    def from_host(self, name: str, arr: np.ndarray) -> np.ndarray:
        """An output array in the model's declared dtype (undoing the host exchange)."""
        want = self._user_dtypes.get(name)
        return arr.astype(want) if want is not None and arr.dtype != want else arr


def _apply_session_options(so: Any, options: Mapping[str, Any]) -> None:
    """Set attributes and config entries of ``so`` (see :class:`OrtRunner`)."""
    for key, value in options.items():
        if "." in key:
            so.add_session_config_entry(key, str(value))
        elif key.startswith("_") or not hasattr(so, key):
            raise OnnxError(f"unknown session option {key!r}: not an attribute of "
                            "onnxruntime.SessionOptions nor a dotted config entry")
        else:
            try:
                setattr(so, key, value)
            except (TypeError, AttributeError) as e:
                raise OnnxError(f"session option {key!r} = {value!r} rejected: {e}") from None


def run_onnxruntime(graph: Graph | ModelProto, inputs: Mapping[str, Any] | None = None,
                    **options: Any) -> dict[str, np.ndarray]:
    """Run ``graph`` once on ONNX Runtime (see :class:`OrtRunner` for options)."""
    return OrtRunner(graph, **options).run(inputs)

