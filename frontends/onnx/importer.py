"""ONNX model -> lbdl_graph Graph.

Graph inputs keep their names and symbolic dims (``dim_param``); initializers become parameters
(trainable for float tensors of rank >= 1) when a node uses them as tensors, and constant
operands (Reshape's shape, Slice's starts, ...) become attributes. Nodes whose inputs are all
known at import time (constants, integer initializers, shapes of static tensors) are folded
with ``onnx.reference``, as ONNX exporters' constant folding would. Every unsupported op and
feature of the model is collected and reported in one :class:`OnnxUnsupportedError`. Nodes get
their module scope and origin from the exporter's metadata or node names (:mod:`.scopes`).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from onnx import ModelProto, NodeProto
from onnx.defs import onnx_opset_version

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import DTypeError, LbdlError, OnnxError, ResourceError
from lbdl_graph.graph import Graph, Value

from . import (  # noqa: F401  (registers the handlers)
    ops_control,
    ops_dynamic,
    ops_elementwise,
    ops_nn,
    ops_pool,
    ops_quant,
    ops_reduce,
    ops_shape,
    resize,
    rnn,
)
from .context import HANDLERS, NodeCtx, OnnxFeatureError, OnnxUnsupportedError
from .fold import DEFAULT_DOMAINS, fold_node, fold_symbolic, type_proto
from .functions import expand_function, has_function_body
from .loader import (
    Source,
    UnsupportedDType,
    load_model,
    numpy_dtype_of,
    onnx_dtype,
    parse_attributes,
    tensor_to_numpy,
)
from .ops_control import inline_constant_if
from .scopes import node_origin, node_scope
from .validate import check_outputs, validate_model

__all__ = ["Importer", "import_onnx"]

MIN_OPSET = 13


def default_opset(model: ModelProto) -> int:
    """The model's version of the default (ai.onnx) domain."""
    for o in model.opset_import:
        if o.domain in DEFAULT_DOMAINS:
            return int(o.version)
    return MIN_OPSET


def _reads(proto: NodeProto) -> list[str]:
    """The tensor names a node reads: its inputs and those its subgraphs read (an If/Loop/Scan
    body reads outer tensors by name)."""
    names = [i for i in proto.input if i]
    for a in proto.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            names += [i for n in g.node for i in _reads(n)]
    return names


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"d_{s}"


class Importer:
    """State of one import: the builder, ONNX-name -> Value map and known constant tensors."""

    def __init__(self, model: ModelProto, src: Source, *, name: str | None,
                 constant_inputs: Mapping[str, Any] | None) -> None:
        self.model = model
        self.src = src
        self.opset = default_opset(model)
        g = model.graph
        self.b = GraphBuilder(name or g.name or "onnx_model")
        self.values: dict[str, Value] = {}
        self.known: dict[str, np.ndarray] = {}
        self.symbolic: dict[str, np.ndarray] = {}  # shape values with symbolic dims
        self.inits: dict[str, np.ndarray] = {}
        self.used: set[str] = set()
        self.reserved: set[str] = {n for node in g.node for n in [*node.input, *node.output]}
        self.reserved |= {v.name for v in [*g.input, *g.output]} | {t.name for t in g.initializer}
        self.producer: dict[str, NodeProto] = {o: node for node in g.node for o in node.output}
        self.graph_inputs: set[str] = set()
        self.constant_inputs = dict(constant_inputs or {})
        self._expansions = 0
        self._counters: dict[str, int] = {}
        self._inherited: dict[int, tuple[str, str]] = {}  # function-body node -> parent's tags
        self.dim_tensors: dict[Any, Value] = {}  # dim expression -> its run-time [1] tensor
        self.current: NodeCtx | None = None  # the node being converted

    # ---- names ----
    def fresh(self, base: str) -> str:
        """An unused value name derived from ``base`` (never an ONNX tensor name)."""
        cand, i = base, self._counters.get(base, 0)
        while cand in self.used or cand in self.reserved:
            i += 1
            cand = f"{base}_{i}"
        self._counters[base] = i
        self.used.add(cand)
        return cand

    def claim(self, onnx_name: str) -> str:
        """Reserve an ONNX tensor name for the value that computes it."""
        if onnx_name in self.used:
            raise self.src.error(f"tensor '{onnx_name}' is produced twice")
        self.used.add(onnx_name)
        return onnx_name

    def provenance(self, proto: NodeProto) -> tuple[str, str]:
        """The (scope, origin) of the IR nodes made for ``proto`` (a function body's nodes
        inherit them from the node they expand)."""
        got = self._inherited.get(id(proto))
        return got if got is not None else (node_scope(proto), node_origin(proto))

    # ---- values ----
    def value(self, name: str) -> Value:
        """The Value of an ONNX tensor, materialising initializers and folded constants."""
        v = self.values.get(name)
        if v is not None:
            return v
        if name in self.inits:
            data = self.inits[name]
            trainable = numpy_dtype_of(data, f"initializer '{name}'").is_float and data.ndim >= 1
            self.used.add(name)
            v = self.b.param(name, data, trainable=trainable)
        elif name in self.known:
            arr = self.known[name]
            numpy_dtype_of(arr, f"constant '{name}'")
            prod = self.producer.get(name)
            scope, origin = self.provenance(prod) if prod is not None else ("", "")
            v = self.b.add_node(ops.constant, [], {"value": arr}, name=f"const/{name}",
                                output_names=[self.claim(name)], scope=scope, origin=origin)[0]
        elif name in self.symbolic:  # a shape value with symbolic dims, used as a tensor
            if self.current is None:
                raise OnnxFeatureError(f"the shape value '{name}' = "
                                       f"{self.symbolic[name].tolist()} depends on symbolic dims")
            v = ops_dynamic.materialize(self.current, self.symbolic[name])
        else:
            later = [n.name or n.op_type for n in self.model.graph.node if name in n.output]
            if later:
                raise self.src.error(f"tensor '{name}' is used before node '{later[0]}' produces "
                                     "it: the graph has a cycle or is not topologically sorted")
            raise self.src.error(f"tensor '{name}' is used but never defined")
        self.values[name] = v
        return v

    def dim_source(self, dim: str) -> tuple[Value, int] | None:
        """A value (graph inputs first) with the symbolic dim ``dim``, and its axis."""
        for v in [*self.b.inputs, *self.values.values()]:
            if dim in v.shape:
                return v, list(v.shape).index(dim)
        return None

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a tensor if known at import time (constants and initializers)."""
        if name in self.known:
            return self.known[name]
        return self.inits.get(name)

    def input_ancestors(self, name: str) -> list[str]:
        """Graph inputs a tensor is computed from (what would have to be constant)."""
        seen: set[str] = set()
        stack, found = [name], []
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in self.known:
                continue
            if t in self.graph_inputs:
                found.append(t)
            elif t in self.producer:
                stack.extend(_reads(self.producer[t]))
        return sorted(found)

    # ---- graph entries ----
    def add_inputs(self) -> None:
        g = self.model.graph
        for t in g.initializer:
            self.inits[t.name] = tensor_to_numpy(t, self.src, f"initializer '{t.name}'")
        if g.sparse_initializer:
            raise OnnxUnsupportedError(f"{self.src.display}: sparse initializers are not "
                                       "supported", features=[("", "", "sparse initializer")])
        for t in list(self.inits):
            data = self.inits[t]
            if data.ndim == 0 or data.dtype.kind in "iub":
                self.known[t] = data  # foldable: integer / bool tensors and scalars
        for vi in g.input:
            if vi.name in self.inits:
                self.known.pop(vi.name, None)  # overridable: a parameter, not a constant
                continue
            if vi.name in self.constant_inputs:
                self.known[vi.name] = np.asarray(self.constant_inputs[vi.name])
                continue
            tt = vi.type
            if not tt.HasField("tensor_type"):
                kind = tt.WhichOneof("value") or "unknown"
                raise OnnxUnsupportedError(
                    f"{self.src.display}: graph input '{vi.name}' has {kind} type; only tensors "
                    "are supported (sequence/optional/map types are not)",
                    features=[("", "", f"{kind} input")])
            try:
                dt = onnx_dtype(tt.tensor_type.elem_type, f"graph input '{vi.name}'")
            except UnsupportedDType as e:
                raise OnnxUnsupportedError(f"{self.src.display}: {e.message}",
                                           features=[("", "", e.message)]) from None
            if not tt.tensor_type.HasField("shape"):
                raise OnnxUnsupportedError(
                    f"{self.src.display}: graph input '{vi.name}' has unknown rank",
                    features=[("", "", "input of unknown rank")])
            shape: list[Any] = []
            for i, d in enumerate(tt.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value >= 0:
                    shape.append(int(d.dim_value))
                elif d.HasField("dim_param") and d.dim_param:
                    shape.append(d.dim_param)
                else:
                    shape.append(f"{_sanitize(vi.name)}_{i}")
            self.used.add(vi.name)
            self.values[vi.name] = self.b.input(vi.name, dt, shape)
            self.graph_inputs.add(vi.name)
        unknown = set(self.constant_inputs) - {vi.name for vi in g.input}
        if unknown:
            raise self.src.error(f"constant_inputs names unknown graph inputs {sorted(unknown)}")

    # ---- the main loop ----
    def run(self) -> Graph:
        self.add_inputs()
        bad_ops: dict[str, tuple[int, str]] = {}
        features: list[tuple[str, str, str]] = []
        needs: set[str] = set()
        poisoned: set[str] = set()
        work = deque(enumerate(self.model.graph.node))
        while work:
            index, proto = work.popleft()
            key = (proto.op_type if proto.domain in DEFAULT_DOMAINS
                   else f"{proto.domain}::{proto.op_type}")
            n = NodeCtx(self, proto, index, parse_attributes(proto, self.src))
            self.current = n
            if poisoned and any(i in poisoned for i in _reads(proto)):
                if key not in HANDLERS and not has_function_body(proto, self.opset):
                    count, first = bad_ops.get(key, (0, n.name))
                    bad_ops[key] = (count + 1, first)
                poisoned.update(o for o in proto.output if o)
                continue
            try:
                if fold_node(self, n) or fold_symbolic(self, n):
                    continue
                inlined = inline_constant_if(self, proto)
                if inlined is not None:  # the taken branch of a constant-condition If
                    self.producer.update((o, p) for p in inlined for o in p.output if o)
                    work.extendleft(reversed([(index, p) for p in inlined]))
                    continue
                handler = HANDLERS.get(key)
                if handler is None:
                    body = self.expand(proto)
                    if body is not None:
                        work.extendleft(reversed([(index, p) for p in body]))
                        continue
                    count, first = bad_ops.get(key, (0, n.name))
                    bad_ops[key] = (count + 1, first)
                    poisoned.update(o for o in proto.output if o)
                    continue
                self._bind(n, handler(n))
            except OnnxFeatureError as e:
                body = None if any(o in self.used for o in proto.output) else self.expand(proto)
                if body is not None:  # the op's function body may still import
                    work.extendleft(reversed([(index, p) for p in body]))
                    continue
                features.append((n.name, proto.op_type, e.message))
                needs.update(e.needs)
                poisoned.update(o for o in proto.output if o)
            except UnsupportedDType as e:
                features.append((n.name, proto.op_type, e.message))
                poisoned.update(o for o in proto.output if o)
            except DTypeError as e:  # an IR op that lacks this dtype combination
                features.append((n.name, proto.op_type, e.message.split(" (inputs:")[0]))
                poisoned.update(o for o in proto.output if o)
            except (OnnxError, ResourceError):
                raise
            except LbdlError as e:
                raise self.src.error(f"node '{n.name}' ({proto.op_type}): {e.message}",
                                     node=n.name, op=proto.op_type, hint=e.hint) from None
            except (ValueError, IndexError, TypeError, KeyError, ArithmeticError) as e:
                # a handler met inputs its op's spec rules out (a rank, a missing operand)
                raise n.error(f"malformed node: inputs ({self._types(proto)}) do not fit "
                              f"{proto.op_type} ({type(e).__name__}: {e})") from None
        if bad_ops or features:
            raise self._unsupported(bad_ops, features, needs)
        outputs: dict[str, Value] = {}
        for vi in self.model.graph.output:
            try:
                outputs[vi.name] = self.value(vi.name)
            except (OnnxFeatureError, UnsupportedDType) as e:
                features.append(("", "graph output", e.message))
        if features:
            raise self._unsupported(bad_ops, features, needs)
        folded = _folded_params(self.model)
        if folded:  # an lbdl-graph export: which initializers are stored layouts of which params
            self.b.metadata["folded_params"] = folded
        try:
            return self.b.build(outputs, prune=True)
        except LbdlError as e:
            raise self.src.error(f"the imported graph is invalid: {e}") from None

    def _types(self, proto: NodeProto) -> str:
        """The types of a node's inputs as imported so far (``?`` where unknown)."""
        out = []
        for i in proto.input:
            try:
                out.append(str(self.value(i).type) if i else "_")
            except LbdlError:
                out.append("?")
        return ", ".join(out)

    def expand(self, proto: NodeProto) -> list[NodeProto] | None:
        """The function body replacing a node the importer has no handler for (or None)."""
        opset = self.opset
        for o in self.model.opset_import:
            if o.domain == proto.domain or (proto.domain in DEFAULT_DOMAINS and
                                            o.domain in DEFAULT_DOMAINS):
                opset = int(o.version)
        types = [type_proto(self, i) for i in proto.input if i]  # present inputs only
        self._expansions += 1
        prefix = f"{proto.name or proto.op_type}__fn{self._expansions}__"
        res = expand_function(proto, opset, types, prefix)
        if res is None:
            return None
        nodes, _ = res
        tags = self.provenance(proto)
        for p in nodes:
            self.reserved.update(t for t in [*p.input, *p.output] if t)
            self.producer.update((o, p) for o in p.output if o)
            self._inherited[id(p)] = tags
        return nodes

    def _bind(self, n: NodeCtx, res: Any) -> None:
        results = [res] if res is None or isinstance(res, Value) else list(res)
        for k, name in enumerate(n.outs):
            if not name:
                continue
            v = results[k] if k < len(results) else None
            if v is None:
                raise n.unsupported(f"output {k} ('{name}') is not supported")
            if v.name != name:
                v = n.emit(ops.identity, v, out=k)
            self.values[name] = v
        check_outputs(n.proto, [v for v in results if v is not None], self.src)

    def _unsupported(self, bad_ops: dict[str, tuple[int, str]],
                     features: list[tuple[str, str, str]], needs: set[str]) -> OnnxError:
        lines = [f"{self.src.display}: cannot import the model:"]
        if bad_ops:
            lines.append("  unsupported ops: " + ", ".join(
                f"{op} ({c} node{'s' if c > 1 else ''}, first '{first}')"
                for op, (c, first) in sorted(bad_ops.items())))
        for node, op, msg in features:
            lines.append(f"  node '{node}' ({op}): {msg}")
        hint = (f"pass constant_inputs for {sorted(needs)} to specialise the graph"
                if needs and not bad_ops else None)
        return OnnxUnsupportedError("\n".join(lines), ops=bad_ops, features=features,
                                    needs_constant=sorted(needs), hint=hint)


def _folded_params(model: ModelProto) -> dict[str, str]:
    """``metadata["folded_params"]`` of the graph an lbdl-graph export came from (or {})."""
    import json

    for prop in model.metadata_props:
        if prop.key == "lbdl.metadata":
            try:
                meta = json.loads(prop.value)
            except ValueError:
                return {}
            folded = meta.get("folded_params") if isinstance(meta, dict) else None
            if isinstance(folded, dict):
                return {str(k): str(v) for k, v in folded.items()}
    return {}


def import_onnx(model: ModelProto | str | os.PathLike[str] | bytes, *, name: str | None = None,
                constant_inputs: Mapping[str, Any] | None = None,
                base_dir: str | os.PathLike[str] | None = None) -> Graph:
    """Import an ONNX model (a path, bytes or ``onnx.ModelProto``) as a verified Graph.

    Args:
        model: the model; external data is read from its directory (or ``base_dir``).
        name: the graph name (default: the ONNX graph's name).
        constant_inputs: values for some graph inputs, which then become constants (to
            specialise a model whose shape operands are graph inputs).
        base_dir: directory of external data files when ``model`` is not a path.

    Raises:
        OnnxUnsupportedError: listing every unsupported op and feature at once.
        OnnxError: unreadable, truncated or corrupted files, unsafe external data, bad models.
    """
    proto, src = load_model(model, base_dir)
    validate_model(proto, src)
    opset = default_opset(proto)
    newest = onnx_opset_version()
    if opset > newest:
        raise src.error(f"opset {opset} is newer than the newest this importer knows ({newest}); "
                        f"re-export the model with opset {MIN_OPSET}..{newest}")
    if opset < MIN_OPSET:
        try:
            from onnx import version_converter

            proto = version_converter.convert_version(proto, MIN_OPSET)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise src.error(f"opset {opset} is older than {MIN_OPSET} and could not be "
                            f"converted ({first})") from None
    return Importer(proto, src, name=name, constant_inputs=constant_inputs).run()
