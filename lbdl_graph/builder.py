"""Building graphs: :class:`GraphBuilder` records nodes as ops are called.

``with GraphBuilder("mlp") as b:`` makes ``b`` the active builder, so that calling an op
(``ops.matmul(x, w)``) appends a typed node, named after the current scope and carrying the
user's source line. Passes use the same builder to re-emit or rewrite nodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from .dtypes import dtype
from .errors import GraphError, LbdlError, OpError
from .graph import Graph, Node, Param, Value
from .opdef import OpDef
from .shapes import Dim
from .source import SourceLoc, caller_location
from .types import TensorType, tensor_type

__all__ = ["GraphBuilder", "current_builder"]

_active: ContextVar[GraphBuilder | None] = ContextVar("lbdl_active_builder", default=None)


def current_builder() -> GraphBuilder:
    """The builder of the innermost ``with GraphBuilder(...)`` block."""
    b = _active.get()
    if b is None:
        raise GraphError(
            "no active graph: call ops inside `with GraphBuilder(...)` or lbdl_graph.trace(...)"
        )
    return b


class GraphBuilder:
    """Accumulates inputs, parameters and nodes, then :meth:`build` returns a Graph."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.params: list[Param] = []
        self.nodes: list[Node] = []
        self.metadata: dict[str, Any] = {}
        self._names: dict[str, set[str]] = {"value": set(), "node": set()}
        self._counters: dict[tuple[str, str], int] = {}
        self._scope: list[str] = []
        self._tag: tuple[str | None, str] = (None, "")  # scope override and origin of new nodes
        self._tokens: list[Any] = []

    @classmethod
    def from_graph(cls, graph: Graph, *, copy_nodes: bool = True) -> GraphBuilder:
        """A builder that starts with ``graph``'s inputs, parameters (and nodes)."""
        b = cls(graph.name)
        b.metadata = dict(graph.metadata)
        b.inputs = list(graph.inputs)
        b.params = list(graph.params)
        b._names["value"].update(v.name for v in graph.iter_values())
        b._names["node"].update(n.name for n in graph.nodes)
        if copy_nodes:
            b.nodes = list(graph.nodes)
        return b

    # ---- context management ----
    def __enter__(self) -> GraphBuilder:
        self._tokens.append(_active.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _active.reset(self._tokens.pop())

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix node names created inside the block with ``name`` (module paths)."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    @contextlib.contextmanager
    def provenance(self, scope: str | None = None, origin: str | None = None) -> Iterator[None]:
        """Give the nodes created inside the block this ``Node.scope`` (instead of the name
        scope) and ``Node.origin``; None keeps the enclosing setting. Names are unaffected."""
        saved = self._tag
        self._tag = (saved[0] if scope is None else scope, saved[1] if origin is None else origin)
        try:
            yield
        finally:
            self._tag = saved

    @property
    def scope_name(self) -> str:
        """The current dotted scope ('' at top level)."""
        return ".".join(s for s in self._scope if s)

    @property
    def node_scope(self) -> str:
        """The ``Node.scope`` new nodes get: the :meth:`provenance` scope, else the name scope."""
        return self._tag[0] if self._tag[0] is not None else self.scope_name

    @property
    def node_origin(self) -> str:
        """The ``Node.origin`` new nodes get ('' outside :meth:`provenance`)."""
        return self._tag[1]

    def unique_name(self, base: str, space: str = "value") -> str:
        """``base`` if unused among this graph's values (or nodes), else ``base_1``, ..."""
        names = self._names[space]
        if base not in names:
            names.add(base)
            return base
        i = self._counters.get((space, base), 0)
        while True:
            i += 1
            cand = f"{base}_{i}"
            if cand not in names:
                self._counters[(space, base)] = i
                names.add(cand)
                return cand

    # ---- graph entries ----
    def input(self, name: str, dt: Any = "float32", shape: Sequence[Dim] = ()) -> Value:
        """Declare a graph input."""
        if name in self._names["value"]:
            raise GraphError(f"name '{name}' is already used in graph '{self.name}'")
        v = Value(self.unique_name(name), tensor_type(dt, shape))
        self.inputs.append(v)
        return v

    def param(self, name: str, data: Any, *, trainable: bool = True) -> Value:
        """Declare a parameter (trainable) or buffer (not trainable) with its data."""
        if name in self._names["value"]:
            raise GraphError(f"parameter name '{name}' is already used in graph '{self.name}'")
        arr = np.asarray(data)
        v = Value(self.unique_name(name), tensor_type(dtype(arr.dtype), arr.shape))
        self.params.append(Param(v, arr, trainable))
        return v

    def add_node(
        self,
        op: OpDef,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any],
        *,
        name: str | None = None,
        source: SourceLoc | None = None,
        output_names: Sequence[str] | None = None,
        scope: str | None = None,
        origin: str | None = None,
    ) -> tuple[Value, ...]:
        """Type-check and append a node; returns its outputs.

        ``scope`` and ``origin`` default to :attr:`node_scope` and :attr:`node_origin`.
        Errors name the node, its op, the input types and the user's source line.
        """
        loc = source if source is not None else caller_location()
        local = name or op.name
        full = f"{self.scope_name}/{local}" if self.scope_name else local
        try:
            op.check_arity(len(inputs))
            for i, v in enumerate(inputs):
                if v is not None and not isinstance(v, Value):
                    raise OpError(
                        f"{op.name}: input {i} must be a Value, got {type(v).__name__}"
                    )
            checked = op.check_attrs(attrs)
            types = op.infer_types([v.type if v is not None else None for v in inputs], checked)
            n_out = op.num_outputs(checked)
            if len(types) != n_out:
                raise OpError(f"{op.name}: rule returned {len(types)} types for {n_out} outputs")
        except LbdlError as e:
            shown = ", ".join(str(v.type) if v is not None else "_" for v in inputs)
            if "inputs:" not in e.message:
                e.message = f"{e.message} (inputs: {shown})"
            raise e.with_context(node=full, op=op.name, source=loc) from None
        node_name = self.unique_name(full, "node")
        if output_names is not None:
            taken = [n for n in output_names if n in self._names["value"]]
            if taken:
                raise GraphError(f"value name(s) {taken} already used in graph '{self.name}'",
                                 node=node_name, op=op.name, source=loc)
            outs = tuple(Value(self.unique_name(n), t) for n, t in zip(output_names, types,
                                                                         strict=True))
        elif len(types) == 1:
            outs = (Value(self.unique_name(node_name), types[0]),)
        else:
            outs = tuple(Value(self.unique_name(f"{node_name}:{i}"), t)
                         for i, t in enumerate(types))
        self.nodes.append(Node(op, tuple(inputs), outs, checked, node_name, loc,
                               self.node_scope if scope is None else scope,
                               self.node_origin if origin is None else origin))
        return outs

    def emit(self, node: Node) -> Node:
        """Append an existing node unchanged (passes use this to keep nodes they do not touch)."""
        self._names["node"].add(node.name)
        self._names["value"].update(v.name for v in node.outputs)
        self.nodes.append(node)
        return node

    def build(
        self,
        outputs: Sequence[Value] | Mapping[str, Value],
        *,
        name: str | None = None,
        verify: bool = True,
        prune: bool = False,
    ) -> Graph:
        """Finish the graph. Named outputs get an identity node when the value has another name
        (with the scope and origin of the value's producer).

        With ``prune``, nodes and parameters the outputs do not need are dropped (inputs stay).
        With ``verify`` the verifier runs on the result.
        """
        from . import ops

        if isinstance(outputs, Mapping):
            outs: list[Value] = []
            made: dict[Value, Node] | None = None
            with self:
                for oname, v in outputs.items():
                    if not isinstance(v, Value):
                        raise GraphError(f"output '{oname}' is not a Value: {type(v).__name__}")
                    if v.name != oname or v in outs:
                        if made is None:
                            made = {o: n for n in self.nodes for o in n.outputs}
                        src = self.nodes[-1].source if self.nodes else None
                        prod = made.get(v)
                        (v,) = self.add_node(ops.identity, [v], {}, name=oname, source=src,
                                             output_names=[oname],
                                             scope=prod.scope if prod else "",
                                             origin=prod.origin if prod else "")
                    outs.append(v)
        else:
            outs = list(outputs)
        graph = Graph(name or self.name, tuple(self.inputs), tuple(outs), tuple(self.nodes),
                      tuple(self.params), dict(self.metadata))
        if prune:
            from .analysis import prune_unused

            graph = prune_unused(graph)
        if verify:
            from .verify import verify as _verify

            _verify(graph)
        return graph

    def constant(self, value: Any, dt: Any | None = None, *, name: str = "const") -> Value:
        """A constant node holding ``value`` (cast to ``dt`` if given)."""
        from . import ops

        arr = np.asarray(value, dtype=dtype(dt).numpy if dt is not None else None)
        with self:
            return ops.constant(value=arr, name=name)

    def value_type(self, v: Value) -> TensorType:
        """The type of a value (convenience for rules)."""
        return v.type
