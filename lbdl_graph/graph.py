"""The dataflow IR: :class:`Value`, :class:`Node`, :class:`Param` and :class:`Graph`.

Graphs are immutable: passes build new graphs and share the nodes they keep, so "what changed"
is a matter of identity. Every value has exactly one producer (a node, a graph input or a
parameter), nodes are stored in a valid topological order, and each node records the user's
source line that created it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import GraphError
from .opdef import OpDef
from .source import SourceLoc
from .types import TensorType

__all__ = ["Graph", "Node", "Param", "Value", "common_scope"]


class Value:
    """A typed SSA value. Compared by identity; the name is unique within its graph."""

    __slots__ = ("name", "type")

    def __init__(self, name: str, type: TensorType) -> None:
        self.name = name
        self.type = type

    @property
    def dtype(self) -> Any:
        """The element type."""
        return self.type.dtype

    @property
    def shape(self) -> tuple[Any, ...]:
        """The (possibly symbolic) shape."""
        return self.type.shape

    @property
    def ndim(self) -> int:
        """The rank."""
        return len(self.type.shape)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(frozen=True, eq=False)
class Node:
    """One op application: inputs (None for absent optional ones), outputs, attributes,
    a stable readable name, the user's source location, the module scope it belongs to
    (a dotted path such as ``h.0.attn``; ``""`` at top level) and its origin: the pass and
    rule that created it (``"fuse_linear:linear"``; ``""`` for nodes made by tracing)."""

    op: OpDef
    inputs: tuple[Value | None, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any]
    name: str
    source: SourceLoc | None = None
    scope: str = ""
    origin: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    @property
    def output(self) -> Value:
        """The single output (raises for multi-output nodes)."""
        if len(self.outputs) != 1:
            raise GraphError(f"node '{self.name}' has {len(self.outputs)} outputs", node=self.name)
        return self.outputs[0]

    def __repr__(self) -> str:
        ins = ", ".join(f"%{v.name}" if v is not None else "_" for v in self.inputs)
        return f"<node {self.name}: {self.op.name}({ins})>"


@dataclass(frozen=True, eq=False)
class Param:
    """An initializer: a named value with data; trainable (a weight) or not (a buffer)."""

    value: Value
    data: np.ndarray
    trainable: bool = True

    @property
    def name(self) -> str:
        """The parameter's name (its value's name)."""
        return self.value.name


@dataclass(frozen=True, eq=False)
class Graph:
    """A static dataflow graph with named inputs, outputs and parameters."""

    name: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    params: tuple[Param, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Graph:
        """A copy with some fields replaced (sequences become tuples)."""
        for key in ("inputs", "outputs", "nodes", "params"):
            if key in changes:
                changes[key] = tuple(changes[key])
        return replace(self, **changes)

    # ---- lookups (cached; graphs never change) ----
    @cached_property
    def producers(self) -> Mapping[Value, Node]:
        """Map from each node output to its node."""
        return MappingProxyType({v: n for n in self.nodes for v in n.outputs})

    @cached_property
    def consumers(self) -> Mapping[Value, tuple[Node, ...]]:
        """Map from a value to the nodes that read it (in node order)."""
        uses: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None and n not in uses.setdefault(v, []):
                    uses[v].append(n)
        return MappingProxyType({v: tuple(ns) for v, ns in uses.items()})

    @cached_property
    def param_map(self) -> Mapping[str, Param]:
        """Parameters by name."""
        return MappingProxyType({p.name: p for p in self.params})

    @cached_property
    def node_map(self) -> Mapping[str, Node]:
        """Nodes by name."""
        return MappingProxyType({n.name: n for n in self.nodes})

    @cached_property
    def values(self) -> Mapping[str, Value]:
        """Every value of the graph by name: inputs, parameters and node outputs."""
        out: dict[str, Value] = {v.name: v for v in self.inputs}
        out.update((p.name, p.value) for p in self.params)
        out.update((v.name, v) for n in self.nodes for v in n.outputs)
        return MappingProxyType(out)

    def producer(self, v: Value) -> Node | None:
        """The node computing ``v``, or None for inputs and parameters."""
        return self.producers.get(v)

    def param_of(self, v: Value) -> Param | None:
        """The parameter whose value is ``v``, if any."""
        p = self.param_map.get(v.name)
        return p if p is not None and p.value is v else None

    def input(self, name: str) -> Value:
        """A graph input by name."""
        for v in self.inputs:
            if v.name == name:
                return v
        raise GraphError(f"graph '{self.name}' has no input '{name}'"
                         f" (inputs: {[v.name for v in self.inputs]})")

    def output_names(self) -> list[str]:
        """Names of the graph outputs, in order."""
        return [v.name for v in self.outputs]

    def iter_values(self) -> Iterator[Value]:
        """Inputs, parameters, then node outputs in order."""
        yield from self.inputs
        yield from (p.value for p in self.params)
        for n in self.nodes:
            yield from n.outputs

    def param_arrays(self, trainable: bool | None = None) -> dict[str, np.ndarray]:
        """Parameter data by name, optionally only the trainable (or frozen) ones."""
        return {p.name: p.data for p in self.params
                if trainable is None or p.trainable == trainable}

    def with_params(self, arrays: Mapping[str, np.ndarray]) -> Graph:
        """A graph with new data for some parameters (same names, shapes and dtypes)."""
        unknown = set(arrays) - set(self.param_map)
        if unknown:
            raise GraphError(f"unknown parameter(s) {sorted(unknown)} for graph '{self.name}'")
        params = []
        for p in self.params:
            if p.name in arrays:
                data = np.asarray(arrays[p.name])
                if data.shape != tuple(p.value.shape) or data.dtype != p.value.dtype.numpy:
                    raise GraphError(
                        f"parameter '{p.name}' expects {p.value.type}, got "
                        f"{data.dtype}{list(data.shape)}"
                    )
                p = Param(p.value, data, p.trainable)
            params.append(p)
        return self.replace(params=params)

    def num_params(self, trainable: bool | None = None) -> int:
        """Total number of parameter elements."""
        return sum(int(p.data.size) for p in self.params
                   if trainable is None or p.trainable == trainable)

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op the graph has."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op.name] = counts.get(n.op.name, 0) + 1
        return counts

    def __str__(self) -> str:
        from .text import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return (f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"{len(self.params)} params, {len(self.outputs)} outputs>")


_SCOPE_SEP = re.compile(r"([./])")


def common_scope(scopes: Iterable[str]) -> str:
    """The longest common prefix of dotted scopes, segment by segment (``/`` also separates):
    ``h.0.attn`` and ``h.0.mlp`` give ``h.0``; ``h.1`` and ``h.10`` give ``h``; none give ``""``.
    """
    common: list[str] | None = None
    for s in scopes:
        parts = _SCOPE_SEP.split(s) if s else []
        if common is None:
            common = parts
            continue
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
        if not common:
            break
    if not common:
        return ""
    if len(common) % 2 == 0:  # ended on a separator
        common = common[:-1]
    return "".join(common)


def values_of(nodes: Iterable[Node]) -> Sequence[Value]:
    """Every output of the given nodes."""
    return [v for n in nodes for v in n.outputs]
