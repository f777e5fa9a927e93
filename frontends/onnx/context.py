"""The per-node view that op handlers work with, the handler table and the importer errors.

A handler receives a :class:`NodeCtx` for one ONNX node, reads its inputs (``n.x(i)``), its
constant operands (``n.ints(i, "shape")``) and attributes (``n.attr("axis", 0)``), emits IR ops
with ``n.emit(op, *inputs, out=k, **attrs)`` (``out=k`` gives the value the name of the node's
k-th ONNX output) and returns the values of the node's outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import NodeProto

from lbdl_graph.dtypes import DType, dtype
from lbdl_graph.errors import OnnxError
from lbdl_graph.graph import Value
from lbdl_graph.opdef import OpDef
from lbdl_graph.source import SourceLoc

if TYPE_CHECKING:
    from .importer import Importer

__all__ = [
    "HANDLERS",
    "NodeCtx",
    "OnnxFeatureError",
    "OnnxUnsupportedError",
    "handles",
]


def ops_mod() -> Any:
    """The IR op namespace (imported lazily)."""
    from lbdl_graph import ops

    return ops


class OnnxUnsupportedError(OnnxError):
    """The model uses ops or features the importer cannot map; lists every one of them.

    ``ops`` maps each unsupported op type to (node count, first node name); ``features`` lists
    (node name, op type, problem); ``needs_constant`` names graph inputs whose values would
    have to be known at import time (see ``import_onnx(constant_inputs=...)``).
    """

    def __init__(self, message: str, *, ops: dict[str, tuple[int, str]] | None = None,
                 features: list[tuple[str, str, str]] | None = None,
                 needs_constant: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.ops = dict(ops or {})
        self.features = list(features or [])
        self.needs_constant = sorted(set(needs_constant))


class OnnxFeatureError(OnnxError):
    """One node uses a feature the importer does not support (collected, not fatal at once)."""

    def __init__(self, message: str, *, needs: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.needs = list(needs)


Handler = Callable[["NodeCtx"], Any]
HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str) -> Callable[[Handler], Handler]:
    """Register a handler for ONNX op types (``"Domain::Op"`` for non-default domains)."""

    def deco(fn: Handler) -> Handler:
        for t in op_types:
            if t in HANDLERS:
                raise OnnxError(f"ONNX op {t} has two handlers")
            HANDLERS[t] = fn
        return fn

    return deco


class NodeCtx:
    """One ONNX node being converted: inputs, constant operands, attributes and emission."""

    def __init__(self, imp: Importer, proto: NodeProto, index: int, attrs: dict[str, Any]) -> None:
        self.imp = imp
        self.proto = proto
        self.op_type = proto.op_type
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.attrs = attrs
        self.outs = list(proto.output)
        self.opset = imp.opset
        self.source = SourceLoc(imp.src.display, index + 1, f"{proto.op_type} '{self.name}'")
        self.scope, self.origin = imp.provenance(proto)

    # ---- reading the node ----
    @property
    def n_inputs(self) -> int:
        """Number of inputs listed (absent optional ones included)."""
        return len(self.proto.input)

    def has(self, i: int) -> bool:
        """True if input ``i`` is present."""
        return i < len(self.proto.input) and self.proto.input[i] != ""

    def x(self, i: int) -> Value:
        """Input ``i`` as a Value (it must be present)."""
        if not self.has(i):
            raise self.error(f"input {i} is required")
        return self.imp.value(self.proto.input[i])

    def opt(self, i: int) -> Value | None:
        """Input ``i`` as a Value, or None if absent."""
        return self.x(i) if self.has(i) else None

    def inputs(self) -> list[Value]:
        """All present inputs as Values."""
        return [self.x(i) for i in range(self.n_inputs) if self.has(i)]

    def const(self, i: int, what: str) -> np.ndarray | None:
        """The value of input ``i`` known at import time (None if absent).

        Raises OnnxFeatureError when it is only known at run time.
        """
        if not self.has(i):
            return None
        name = self.proto.input[i]
        arr = self.imp.constant_value(name)
        if arr is None and name in self.imp.symbolic:
            raise self.unsupported(f"{what} input '{name}' = {self.imp.symbolic[name].tolist()} "
                                   "depends on symbolic dims")
        if arr is None:
            raise self.unsupported(f"dynamic {what} input '{name}' (must be a constant known at "
                                   "import time)", needs=self.imp.input_ancestors(name))
        return arr

    def symbolic(self, i: int) -> list[Any] | None:
        """Input ``i`` as a shape value with symbolic dims (ints and dim names), or None."""
        sym = self.imp.symbolic.get(self.proto.input[i]) if self.has(i) else None
        return None if sym is None else [d if isinstance(d, str) else int(d)
                                         for d in sym.reshape(-1)]

    def ints(self, i: int, what: str) -> list[int] | None:
        """A constant integer operand as a list (None if absent)."""
        arr = self.const(i, what)
        if arr is None:
            return None
        arr = np.asarray(arr)
        if arr.dtype.kind not in "iub":  # ONNX gives these operands as integers
            raise self.error(f"operand {what!r} must be an integer tensor, got {arr.dtype}")
        return [int(v) for v in arr.reshape(-1)]

    def scalar_const(self, i: int, what: str) -> float | None:
        """A constant scalar operand as a float (None if absent or empty)."""
        arr = self.const(i, what)
        if arr is None or arr.size == 0:
            return None
        return float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute value, or ``default``."""
        return self.attrs.get(name, default)

    def axes(self, i: int, attr: str = "axes") -> list[int] | None:
        """Axes given as attribute (older opsets) or as constant input ``i`` (newer ones)."""
        if attr in self.attrs:
            return list(self.attrs[attr])
        return self.ints(i, attr)

    def static_shape(self, v: Value, what: str) -> tuple[int, ...]:
        """The shape of ``v``, which must be fully static for this conversion."""
        shape = tuple(v.type.shape)
        if not all(isinstance(d, int) for d in shape):
            raise self.unsupported(f"{what} needs static dims, got {v.type}")
        return shape  # type: ignore[return-value]

    # ---- emitting IR ----
    def emit(self, op: OpDef, *inputs: Value | None, out: int | Sequence[int | None] | None = None,
             **attrs: Any) -> Any:
        """Add an IR node; ``out`` names its outputs after the node's ONNX outputs.

        Returns the Value (or the tuple of Values of a multi-output op).
        """
        n_out = op.num_outputs(op.check_attrs(attrs))
        slots: list[int | None]
        if out is None:
            slots = [None] * n_out
        elif isinstance(out, int):
            slots = [out] + [None] * (n_out - 1)
        else:
            slots = list(out) + [None] * (n_out - len(out))
        names = []
        for k in slots:
            onnx_name = self.outs[k] if k is not None and k < len(self.outs) else ""
            names.append(self.imp.claim(onnx_name) if onnx_name else
                         self.imp.fresh(f"{self.name}/{op.name}"))
        node_name = self.name if out is not None else f"{self.name}/{op.name}"
        outs = self.imp.b.add_node(op, list(inputs), attrs, name=node_name, source=self.source,
                                   output_names=names, scope=self.scope, origin=self.origin)
        return outs[0] if len(outs) == 1 and isinstance(op.outputs, int) else outs

    def constant(self, value: Any, dt: DType | str | None = None) -> Value:
        """A constant node holding ``value`` (converted to ``dt`` if given)."""
        from lbdl_graph import ops

        arr = np.asarray(value, dtype=dtype(dt).numpy if dt is not None else None)
        return self.emit(ops.constant, value=arr)

    def scalar(self, value: float, like: Value | DType) -> Value:
        """A rank-0 constant of ``like``'s dtype."""
        dt = like.dtype if isinstance(like, Value) else like
        return self.constant(np.asarray(value).astype(dt.numpy), dt)

    # ---- errors ----
    def error(self, message: str) -> OnnxError:
        """A fatal OnnxError naming the file, node and op."""
        return self.imp.src.error(f"node '{self.name}' ({self.op_type}): {message}",
                                  node=self.name, op=self.op_type)

    def unsupported(self, feature: str, needs: Sequence[str] = ()) -> OnnxFeatureError:
        """A collected error: this node uses a feature the importer does not map."""
        return OnnxFeatureError(feature, needs=needs, node=self.name, op=self.op_type)
