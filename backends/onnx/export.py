"""Export a graph to ONNX, and save / load ONNX files safely.

:func:`to_onnx` lowers every node through :data:`~lbdl_graph.backends.onnx.lowering.LOWERINGS`.
ONNX node names are the IR node names (helper nodes get ``<ir name>/<OpType>``), each node's
``doc_string`` is the user's source line (package- or project-relative, never a machine path)
and its ``metadata_props`` name the IR node and op, so errors raised by ONNX Runtime can be mapped
back to the user's code, and carry the node's scope and origin (``lbdl.scope``, ``lbdl.origin``,
when set; node metadata needs IR 10, which every export writes) so that importing the file gives
them back. ``save_onnx(..., provenance=False)`` moves all of that to a sidecar file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import GraphProto, ModelProto, TensorProto, external_data_helper, helper, numpy_helper

from lbdl_graph import __version__
from lbdl_graph.errors import LbdlError, OnnxError
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.verify import verify

from .lowering import LoweringContext, onnx_dtype
from .provenance import strip_provenance, write_sidecar
from .tied import tied_transposes

__all__ = ["DEFAULT_OPSET", "MAX_IR_VERSION", "OPSETS", "Exported", "export_graph",
           "load_onnx_model", "save_onnx", "to_onnx"]

DEFAULT_OPSET = 21
OPSETS = range(17, 27)
MAX_IR_VERSION = 13  # the newest IR ONNX Runtime 1.31 loads; onnx 1.23 writes 14 by default
EXTERNAL_THRESHOLD = 100 * 2**20  # bytes of weights above which save_onnx goes external
_PROTO_LIMIT = 2**31 - 1
_MIN_OPSET = {"int4": 21, "uint4": 21, "float8_e4m3fn": 19}  # first opset with the type


@dataclass(frozen=True)
class Exported:
    """An exported model and the map from its ONNX node names to the IR nodes they came from."""

    model: ModelProto
    node_map: Mapping[str, Node]


def _value_info(v: Value) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, onnx_dtype(v.type.dtype), list(v.type.shape))


def _metadata_json(metadata: Mapping[str, Any]) -> str:
    """The JSON-serialisable part of the graph metadata."""
    out: dict[str, Any] = {}
    for k, v in metadata.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return json.dumps(out, sort_keys=True)


def _check_dtypes(graph: Graph, opset: int) -> None:
    """Element types the target opset cannot express raise a typed error up front."""
    for v in graph.iter_values():
        need = _MIN_OPSET.get(v.type.dtype.name, 0)
        if opset < need:
            n = graph.producer(v)
            raise OnnxError(f"value %{v.name} has dtype {v.type.dtype.name}, which needs opset "
                            f">= {need} (exporting to {opset})", node=n.name if n else None,
                            op=n.op.name if n else None, source=n.source if n else None)


def _ir_version(opset: int) -> int:
    needed = helper.find_min_ir_version_for([helper.make_opsetid("", opset)], True)
    return min(MAX_IR_VERSION, max(10, needed))  # IR 10: int4/uint4 and node metadata_props


def _perm(n: Node) -> tuple[int, ...]:
    """The permutation of a transpose node (None reverses the axes)."""
    p = n.attrs.get("perm")
    return tuple(range(n.outputs[0].ndim))[::-1] if p is None else tuple(p)


def _fold_transposes(graph: Graph) -> Graph:
    """``transpose(transpose(x))`` -> ``x`` (or one transpose) and ``swap(a @ b)`` ->
    ``swap(b) @ swap(a)``, where ``swap`` exchanges the last two axes.

    Reverse mode writes a linear layer's weight gradient as ``swap(swap(x) @ g)``. ONNX Runtime
    folds transposes into a MatMul's inputs (FusedMatMul, Gemm) but not into its output, so each
    step transposed every weight gradient (and its transpose optimizer pushed more transposes
    into the optimizer update); ``swap(g) @ x`` needs none.
    """
    from lbdl_graph import ops
    from lbdl_graph.builder import GraphBuilder

    if not any(n.op is ops.transpose for n in graph.nodes):
        return graph
    keep = set(graph.outputs)
    readers = Counter(v for n in graph.nodes for v in n.inputs if v is not None)
    b = GraphBuilder.from_graph(graph, copy_nodes=False)
    made: dict[Value, Node] = {}  # producer of each value among the nodes emitted so far
    created: set[int] = set()  # ids of the nodes this rewrite adds
    sub: dict[Value, Value] = {}  # replaced transpose output -> its replacement

    def emit(op: Any, inputs: list[Value], like: Node, **attrs: Any) -> Value:
        (v,) = b.add_node(op, inputs, attrs, name=like.name, source=like.source,
                          scope=like.scope, origin="onnx_export:fold_transposes")
        made[v] = b.nodes[-1]
        created.add(id(b.nodes[-1]))
        return v

    def transposed(x: Value, p: tuple[int, ...], like: Node) -> Value:
        inner = made.get(x)
        if inner is not None and inner.op is ops.transpose:
            q = _perm(inner)
            p, x = tuple(q[i] for i in p), inner.inputs[0]  # type: ignore[assignment]
        return x if p == tuple(range(len(p))) else emit(ops.transpose, [x], like, perm=p)

    def fold(n: Node) -> Value | None:
        x, p = n.inputs[0], _perm(n)
        inner = made.get(x) if x is not None else None
        if x is None or inner is None or x in keep:
            return None
        if inner.op is ops.transpose:
            return transposed(x, p, n)
        swap = (*range(len(p) - 2), len(p) - 1, len(p) - 2)
        a, c = inner.inputs if inner.op is ops.matmul else (None, None)
        if a is None or c is None or len(p) < 2 or p != swap or readers[x] != 1 or \
                a.ndim != len(p) or c.ndim != len(p):
            return None
        return emit(ops.matmul, [transposed(c, swap, n), transposed(a, swap, n)], n)

    with b:
        for n in graph.nodes:
            if any(v in sub for v in n.inputs if v is not None):
                n = replace(n, inputs=tuple(sub.get(v, v) if v is not None else None
                                            for v in n.inputs))
            new = fold(n) if n.op is ops.transpose and n.outputs[0] not in keep else None
            if new is not None and new.type == n.outputs[0].type:
                sub[n.outputs[0]] = new
                continue
            b.emit(n)
            made.update((o, n) for o in n.outputs)
    if not sub:
        return graph
    # drop what the rewrite left unread; nodes that were unread before are kept as they were
    needed = set(keep)
    live: list[Node] = []
    for n in reversed(b.nodes):
        unread_before = id(n) not in created and not any(o in readers or o in keep
                                                         for o in n.outputs)
        if unread_before or any(o in needed for o in n.outputs):
            live.append(n)
            needed.update(v for v in n.inputs if v is not None)
    return graph.replace(nodes=live[::-1])


def _used_names(nodes: Iterator[onnx.NodeProto] | list[onnx.NodeProto]) -> set[str]:
    """Every value name read by ``nodes`` or by the nodes of their subgraphs."""
    used: set[str] = set()
    for n in nodes:
        used.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used.update(_used_names(list(sub.node)))
                used.update(o.name for o in sub.output)
    return used


def _drop_unused_optional_outputs(nodes: list[onnx.NodeProto], graph_outputs: set[str],
                                  opset: int) -> None:
    """Trim trailing optional outputs nothing reads (in place).

    ONNX Runtime picks a slower kernel for some ops when an optional output is requested:
    MaxPool with its Indices output runs ~20x slower than without, and the Indices of a
    max_pool are only read by its gradient, never in an evaluation graph.
    """
    used = _used_names(nodes) | graph_outputs
    for n in nodes:
        if n.domain not in ("", "ai.onnx") or len(n.output) < 2:
            continue
        try:
            formal = onnx.defs.get_schema(n.op_type, opset, "").outputs
        except onnx.defs.SchemaError:
            continue
        outs = list(n.output)
        while len(outs) > 1 and outs[-1] not in used and len(outs) <= len(formal) and \
                formal[len(outs) - 1].option == onnx.defs.OpSchema.FormalParameterOption.Optional:
            outs.pop()
        if len(outs) < len(n.output):
            n.output[:] = outs


def _write_outputs_directly(nodes: list[onnx.NodeProto], node_map: dict[str, Node],
                            graph_outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop an Identity that copies a computed value to a graph output: its producer writes the
    output (renamed) and the value's other readers read it from there.

    ONNX Runtime keeps such an Identity when the value has other readers (Adam's new moment
    ``opt.m/w:next`` also feeds the update of ``w``), so it copied every moment every step.
    """
    if any(a.HasField("g") or len(a.graphs) for n in nodes for a in n.attribute):
        return nodes  # subgraphs may read the old name from the outer scope: leave them be
    produced = {o for n in nodes for o in n.output if o}
    readers = Counter(x for n in nodes for x in n.input)
    rename: dict[str, str] = {}
    for n in nodes:
        if n.op_type == "Identity" and n.domain in ("", "ai.onnx") and \
                n.output[0] in graph_outputs:
            src = n.input[0]
            # a value only the Identity reads is renamed by ONNX Runtime itself: left as is
            if src in produced and readers[src] > 1 and src not in graph_outputs and \
                    src not in rename:
                rename[src] = n.output[0]
    if not rename:
        return nodes
    kept = []
    for n in nodes:
        if n.op_type == "Identity" and n.input[0] in rename and \
                rename[n.input[0]] == n.output[0]:
            node_map.pop(n.name, None)
            continue
        n.input[:] = [rename.get(x, x) for x in n.input]
        n.output[:] = [rename.get(x, x) for x in n.output]
        kept.append(n)
    return kept


def _drop_dead_nodes(nodes: list[onnx.NodeProto], graph_outputs: set[str]
                     ) -> list[onnx.NodeProto]:
    """The nodes some output of which is read (by a kept node or as a graph output).

    A lowering rule may make a node's ONNX result unneeded (a compare of two iotas reads their
    columns, not the expanded iotas); ONNX Runtime would still run the orphans every call."""
    live = set(graph_outputs)
    kept: list[onnx.NodeProto] = []
    for n in reversed(nodes):
        if not n.output or any(o in live for o in n.output):
            kept.append(n)
            live |= _used_names([n])
    return kept[::-1]


def export_graph(graph: Graph, *, opset: int = DEFAULT_OPSET, target: str = "ort",
           training: bool = True, params_as_inputs: bool = False) -> Exported:
    """Lower ``graph`` to ONNX; see :func:`to_onnx`. Also returns the ONNX -> IR node map."""
    if opset not in OPSETS:
        raise OnnxError(f"opset {opset} is not supported; use {OPSETS.start}..{OPSETS.stop - 1}")
    if target not in ("ort", "portable"):
        raise OnnxError(f"unknown target {target!r}; use 'ort' or 'portable'")
    verify(graph)
    _check_dtypes(graph, opset)
    graph = _fold_transposes(graph)
    ctx = LoweringContext(opset, target, training=training)
    ctx.reserve((v.name for v in graph.iter_values()), (n.name for n in graph.nodes))
    for node in graph.nodes:
        try:
            ctx.lower(node, [v.name if v is not None else None for v in node.inputs],
                      outputs=[v.name for v in node.outputs])
        except LbdlError as e:
            raise e.with_context(node=node.name, op=node.op.name, source=node.source) from None
    inputs = [_value_info(v) for v in graph.inputs]
    if params_as_inputs:  # an initializer that is also an input is an overridable default
        inputs += [_value_info(p.value) for p in graph.params]
    tied, tie_nodes = tied_transposes(graph) if not params_as_inputs else (set(), [])
    params = [numpy_helper.from_array(p.data, p.name) for p in graph.params
              if p.name not in tied]
    outputs, seen = [], set()
    for v in graph.outputs:
        if v.name not in seen:
            seen.add(v.name)
            outputs.append(_value_info(v))
    ctx.nodes = _drop_dead_nodes(ctx.nodes, seen)
    _drop_unused_optional_outputs(ctx.nodes, seen, opset)
    ctx.nodes = _write_outputs_directly(ctx.nodes, ctx.node_map, seen)
    gp = helper.make_graph(tie_nodes + ctx.nodes, graph.name, inputs, outputs,
                           initializer=params + ctx.initializers)
    opsets = [helper.make_opsetid("", opset),
              *(helper.make_opsetid(d, v) for d, v in sorted(ctx.domains.items()))]
    model = helper.make_model(
        gp, opset_imports=opsets, ir_version=_ir_version(opset),
        producer_name="lbdl-graph", producer_version=__version__,
        doc_string=f"lbdl-graph export of graph '{graph.name}' (target {target})")
    helper.set_model_props(model, {"lbdl.graph": graph.name, "lbdl.target": target,
                                   "lbdl.metadata": _metadata_json(graph.metadata)})
    return Exported(model, dict(ctx.node_map))


def to_onnx(graph: Graph, *, opset: int = DEFAULT_OPSET, target: str = "ort",
            training: bool = True, params_as_inputs: bool = False) -> ModelProto:
    """Export ``graph`` as an ONNX model.

    Args:
        graph: a verified graph; parameters become initializers.
        opset: default-domain opset, 17..26.
        target: "ort" casts around dtypes ONNX Runtime's CPU provider has no kernel for;
            "portable" emits each op as its plain ONNX equivalent.
        training: when False, dropout is exported as Identity (evaluation mode).
        params_as_inputs: also list the parameters as graph inputs (overridable defaults).
    """
    return export_graph(graph, opset=opset, target=target, training=training,
                  params_as_inputs=params_as_inputs).model


# ---------------------------------------------------------------- files


def _graph_tensors(g: GraphProto) -> Iterator[TensorProto]:
    yield from g.initializer
    yield from (s.values for s in g.sparse_initializer)
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _graph_tensors(a.g)
            for sub in a.graphs:
                yield from _graph_tensors(sub)


def _weight_bytes(model: ModelProto) -> int:
    return sum(len(t.raw_data) for t in _graph_tensors(model.graph))


def save_onnx(graph_or_model: Graph | ModelProto, path: str | os.PathLike[str], *,
              external_data: bool | None = None, provenance: bool = True,
              **export_options: Any) -> Path:
    """Write a model (a Graph is exported first with ``export_options``) atomically.

    With ``external_data`` (default: when the weights exceed 100 MB) every tensor above 1 KiB
    goes into ONE file ``<name>.data`` beside the model, in the model's directory. Both files are
    written to a temporary directory there and renamed into place, model last, so an error never
    leaves a half-written model. ``provenance=False`` leaves source lines and IR node names out of
    the model and writes them to ``<stem>.provenance.json`` beside it. Returns the model path.
    """
    model = graph_or_model if isinstance(graph_or_model, ModelProto) else to_onnx(
        graph_or_model, **export_options)
    table = None
    if not provenance:
        model, table = strip_provenance(model)
    path = Path(path)
    if path.is_dir():
        raise OnnxError(f"cannot save ONNX model: {path} is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise OnnxError(f"cannot save ONNX model to {path}: directory {parent} does not exist")
    external = external_data if external_data is not None else (
        _weight_bytes(model) > EXTERNAL_THRESHOLD)
    location = f"{path.name}.data"
    tmp: str | None = None
    try:
        tmp = tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent)
        if external:
            copy = ModelProto()
            copy.CopyFrom(model)
            external_data_helper.convert_model_to_external_data(
                copy, all_tensors_to_one_file=True, location=location, size_threshold=1024,
                convert_attribute=False)
            external_data_helper.write_external_data_tensors(copy, tmp)
            model = copy
        if model.ByteSize() > _PROTO_LIMIT:
            raise OnnxError(f"model {path.name} is over 2 GB; save it with external_data=True")
        with open(os.path.join(tmp, path.name), "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        if external and os.path.exists(os.path.join(tmp, location)):
            os.replace(os.path.join(tmp, location), parent / location)
        if table is not None:
            write_sidecar(path, table)
        os.replace(os.path.join(tmp, path.name), path)
    except OSError as e:
        raise OnnxError(f"cannot save ONNX model to {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


_DRIVE = re.compile(r"^[A-Za-z]:")


def _external_location(t: TensorProto, base: Path, model_name: str) -> None:
    """Reject external data that would be read from outside the model's directory."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    parts = re.split(r"[\\/]", loc)
    if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or _DRIVE.match(loc) \
            or ".." in parts:
        raise OnnxError(f"{model_name}: tensor '{t.name}' has external data at {loc!r}, outside "
                        "the model's directory; refusing to read it")
    root = base.resolve()
    target = (base / loc).resolve()
    if not target.is_relative_to(root):
        raise OnnxError(f"{model_name}: external data {loc!r} of tensor '{t.name}' resolves to "
                        f"{target}, outside the model's directory {root}")
    if not target.is_file():
        raise OnnxError(f"{model_name}: external data file {loc!r} of tensor '{t.name}' is "
                        "missing")
    end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
    if target.stat().st_size < end:
        raise OnnxError(f"{model_name}: external data file {loc!r} is truncated (tensor "
                        f"'{t.name}' needs {end} bytes, the file has {target.stat().st_size})")


def load_onnx_model(path: str | os.PathLike[str], *, load_external_data: bool = True,
                    check: bool = True) -> ModelProto:
    """Read an ONNX model (and its external data, which must lie in the model's directory).

    Truncated or corrupted files and unsafe external-data locations raise
    :class:`~lbdl_graph.errors.OnnxError` naming the file.
    """
    path = Path(path)
    name = path.name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OnnxError(f"cannot read ONNX model {path}: {e.strerror or e}") from None
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise OnnxError(f"{name}: not a valid ONNX model (truncated or corrupted file: {e})"
                        ) from None
    external = [t for t in _graph_tensors(model.graph)
                if t.data_location == TensorProto.EXTERNAL]
    for t in external:
        _external_location(t, path.parent, name)
    if external and load_external_data:
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as e:  # onnx raises several types here
            raise OnnxError(f"{name}: cannot load external data: {e}") from None
    if check:
        try:
            if model.ByteSize() <= _PROTO_LIMIT and not (external and not load_external_data):
                onnx.checker.check_model(model)
            else:  # the checker resolves external data next to the file
                onnx.checker.check_model(str(path))
        except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OnnxError(f"{name}: invalid ONNX model (truncated or corrupted?): {first}"
                            ) from None
    return model
