"""Op declarations: one :class:`OpDef` per op, the single place its schema and type rule live.

Facets (NumPy kernels, ONNX lowerings, VJP rules, ...) live in tables keyed by the OpDef object
in the packages that use them (see :mod:`lbdl_graph.registry`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .dtypes import DType, dtype
from .errors import LbdlError, OpError
from .types import TensorType

if TYPE_CHECKING:
    from .graph import Value

__all__ = ["OPS", "REQUIRED", "Attr", "OpDef", "Trait", "defop"]


class Trait(enum.Enum):
    """Properties generic passes read instead of per-op code."""

    ELEMENTWISE = "elementwise"  # output[i] depends only on inputs[i] (after broadcasting)
    COMMUTATIVE = "commutative"  # binary op with f(a, b) == f(b, a)
    REDUCTION = "reduction"  # reduces over attribute ``axes``
    DIFFERENTIABLE = "differentiable"  # has a VJP rule for its float inputs
    STOCHASTIC = "stochastic"  # output depends on a random stream
    SHAPE = "shape"  # moves or views data without arithmetic
    COLLECTIVE = "collective"  # combines the value across processes (never folded or fused)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_KINDS = ("int", "float", "bool", "str", "ints", "floats", "dtype", "tensor", "graph", "any")


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute: name, kind (one of int, float, bool, str, ints, floats, dtype, tensor,
    graph (a nested :class:`~lbdl_graph.graph.Graph`, the body of a control-flow op), any),
    default (REQUIRED if none) and whether None is allowed."""

    name: str
    kind: str
    default: Any = REQUIRED
    optional: bool = False  # None is a legal value

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"attribute {self.name}: unknown kind {self.kind!r}")

    def coerce(self, value: Any) -> Any:
        """Check and normalise a value (lists become tuples, dtypes become DType)."""
        if value is None:
            if self.optional:
                return None
            raise OpError(f"attribute '{self.name}' must not be None")
        k = self.kind
        try:
            if k == "int":
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError
                return int(value)
            if k == "float":
                return float(value)
            if k == "bool":
                if not isinstance(value, bool | np.bool_ | int) or value not in (0, 1):
                    raise TypeError
                return bool(value)
            if k == "str":
                if not isinstance(value, str):
                    raise TypeError
                return value
            if k == "ints":
                seq = (value,) if isinstance(value, int) else tuple(value)
                if any(isinstance(v, bool) or int(v) != v for v in seq):
                    raise TypeError
                return tuple(int(v) for v in seq)
            if k == "floats":
                return tuple(float(v) for v in value)
            if k == "dtype":
                return dtype(value)
            if k == "tensor":
                arr = np.array(value, copy=True)
                arr.flags.writeable = False
                return arr
            if k == "graph":
                from .graph import Graph

                if not isinstance(value, Graph):
                    raise TypeError
                return value
            return value
        except LbdlError:
            raise
        except (TypeError, ValueError, OverflowError):
            raise OpError(
                f"attribute '{self.name}' expects {k}, got {value!r} ({type(value).__name__})"
            ) from None


InferFn = Callable[..., "TensorType | tuple[TensorType, ...]"]


@dataclass(frozen=True, eq=False)
class OpDef:
    """The schema of one op: inputs, attributes, a shape/dtype rule and traits.

    ``inputs`` names the operands; a trailing ``?`` marks an optional input and a leading ``*``
    a variadic one (last only). ``infer(*input_types, **attrs)`` returns the output type(s);
    missing optional inputs are passed as None. ``outputs`` is a count, or a function of the
    attributes for ops like ``split``. Calling the OpDef adds a node to the active builder.
    """

    name: str
    inputs: tuple[str, ...]
    infer: InferFn
    attrs: tuple[Attr, ...] = ()
    outputs: int | Callable[[Mapping[str, Any]], int] = 1
    traits: frozenset[Trait] = frozenset()
    decompose: Callable[..., Any] | None = None
    onnx: str | None = None
    doc: str = ""
    attr_map: Mapping[str, Attr] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr_map", MappingProxyType({a.name: a for a in self.attrs}))

    def __repr__(self) -> str:
        return f"<op {self.name}>"

    def has(self, trait: Trait) -> bool:
        """True if the op carries ``trait``."""
        return trait in self.traits

    @property
    def differentiable(self) -> bool:
        """True if gradients flow through the op's float inputs."""
        return Trait.DIFFERENTIABLE in self.traits

    @property
    def variadic(self) -> bool:
        """True if the last input takes any number of operands."""
        return bool(self.inputs) and self.inputs[-1].startswith("*")

    def input_names(self, n: int) -> list[str]:
        """The operand names for a node with ``n`` inputs."""
        names = [s.strip("*?") for s in self.inputs]
        if self.variadic:
            fixed = names[:-1]
            return fixed + [f"{names[-1]}{i}" for i in range(n - len(fixed))]
        return names[:n]

    def check_arity(self, n: int) -> None:
        """Raise OpError if ``n`` operands do not fit the schema."""
        required = sum(1 for s in self.inputs if not s.endswith("?") and not s.startswith("*"))
        if self.variadic:
            if n < required + 1:
                raise OpError(f"{self.name} takes at least {required + 1} inputs, got {n}")
        elif not required <= n <= len(self.inputs):
            raise OpError(
                f"{self.name}({', '.join(self.inputs)}) takes "
                f"{required if required == len(self.inputs) else f'{required}-{len(self.inputs)}'}"
                f" inputs, got {n}"
            )

    def check_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Validate attributes, fill in defaults, and return a new dict in schema order."""
        unknown = sorted(set(attrs) - set(self.attr_map))
        if unknown:
            known = ", ".join(self.attr_map) or "none"
            raise OpError(f"{self.name}: unknown attribute(s) {unknown}; known: {known}")
        out: dict[str, Any] = {}
        for a in self.attrs:
            if a.name in attrs:
                out[a.name] = a.coerce(attrs[a.name])
            elif a.default is REQUIRED:
                raise OpError(f"{self.name}: missing required attribute '{a.name}'")
            else:
                out[a.name] = a.default
        return out

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        """How many outputs a node with these (checked) attributes has."""
        return self.outputs if isinstance(self.outputs, int) else self.outputs(attrs)

    def infer_types(
        self, input_types: Sequence[TensorType | None], attrs: Mapping[str, Any]
    ) -> tuple[TensorType, ...]:
        """Apply the shape/dtype rule (omitted trailing optional inputs are passed as None);
        always returns a tuple."""
        types = list(input_types)
        if not self.variadic:
            types += [None] * (len(self.inputs) - len(types))
        out = self.infer(*types, **attrs)
        return out if isinstance(out, tuple) else (out,)

    def __call__(self, *inputs: Value | None, name: str | None = None, **attrs: Any) -> Any:
        """Add a node to the active :class:`~lbdl_graph.builder.GraphBuilder`.

        Returns the output Value, or a tuple of Values for multi-output ops.
        """
        from .builder import current_builder

        outs = current_builder().add_node(self, list(inputs), attrs, name=name)
        return outs[0] if len(outs) == 1 and isinstance(self.outputs, int) else outs


OPS: dict[str, OpDef] = {}


def defop(
    name: str,
    inputs: Sequence[str],
    *,
    infer: InferFn,
    attrs: Sequence[Attr] = (),
    outputs: int | Callable[[Mapping[str, Any]], int] = 1,
    traits: Sequence[Trait] = (),
    decompose: Callable[..., Any] | None = None,
    onnx: str | None = None,
    doc: str = "",
) -> OpDef:
    """Declare an op and register it in :data:`OPS`; a duplicate name raises."""
    if name in OPS:
        raise OpError(f"op '{name}' is declared twice")
    op = OpDef(name, tuple(inputs), infer, tuple(attrs), outputs, frozenset(traits), decompose,
               onnx, doc)
    OPS[name] = op
    return op


def dtype_attr(value: Any) -> DType:
    """Coerce a dtype attribute value (helper for rules)."""
    return dtype(value)
