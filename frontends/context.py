"""The state of one trace: parameter values, module names, the random key and state updates.

A :class:`TraceState` is attached to each :class:`~lbdl_graph.builder.GraphBuilder` the DSL
uses (``trace`` creates one explicitly; a hand-opened ``with GraphBuilder(...)`` gets one on
demand), so parameters, dropout salts and BatchNorm updates work the same in both cases.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from lbdl_graph.builder import GraphBuilder, current_builder
from lbdl_graph.errors import GraphError
from lbdl_graph.graph import Value

__all__ = ["RNG_INPUT", "TraceState", "current_state", "state_for"]

RNG_INPUT = "rng_key"

_STATES: weakref.WeakKeyDictionary[GraphBuilder, TraceState] = weakref.WeakKeyDictionary()


class TraceState:
    """Per-graph bookkeeping of the DSL.

    Attributes:
        builder: the graph being built.
        names: qualified names of the traced model's parameters and buffers, by ``id``.
        module_paths: dotted paths of the traced model's sub-modules, by ``id``.
        updates: new values of buffers recorded by training-mode layers, by buffer name.
        salt: the next dropout salt (each stochastic call gets its own stream).
        kv_cache: the active :class:`~lbdl_graph.frontends.layers.kv_cache.KVCache`, if any.
    """

    def __init__(self, builder: GraphBuilder) -> None:
        self.builder = builder
        self.names: dict[int, str] = {}
        self.module_paths: dict[int, str] = {}
        self.updates: dict[str, Value] = {}
        self.salt = 0
        self.kv_cache: Any = None
        self._leaves: dict[int, tuple[Any, Value]] = {}
        self._stack: list[str] = []
        self._rng: Value | None = None

    # ---- parameters and buffers ----
    def declare(self, leaf: Any, name: str, *, trainable: bool) -> Value:
        """Add ``leaf`` (a Parameter or Buffer) as a graph parameter named ``name``."""
        share = getattr(leaf, "share", None)
        data = share() if share is not None else np.array(leaf.data, copy=True)
        v = self.builder.param(name, data, trainable=trainable)
        self._leaves[id(leaf)] = (leaf, v)
        return v

    def value_of(self, leaf: Any) -> Value:
        """The graph value of a Parameter or Buffer, declaring it on first use.

        Leaves outside the traced model get a generic unique name (``param``, ``param_1``...).
        After :meth:`record_update` the buffer reads as its updated value.
        """
        hit = self._leaves.get(id(leaf))
        if hit is not None:
            return hit[1]
        trainable = bool(getattr(leaf, "requires_grad", False))
        name = self.names.get(id(leaf))
        if name is not None:
            return self.declare(leaf, name, trainable=trainable)
        base = "param" if trainable else "buffer"
        for i in range(10_000):
            try:
                return self.declare(leaf, base if i == 0 else f"{base}_{i}", trainable=trainable)
            except GraphError:
                continue
        raise GraphError(f"no free name for an unnamed {base}")

    def record_update(self, buffer: Any, new: Value) -> None:
        """Record the next value of ``buffer`` (a graph output ``<name>:next`` of the trace)."""
        name = self.value_of(buffer).name
        self._leaves[id(buffer)] = (buffer, new)
        self.updates[name] = new

    # ---- random numbers ----
    def rng_key(self) -> Value:
        """The ``rng_key`` graph input (i64[2] = seed, counter), added on first use."""
        if self._rng is None:
            self._rng = self.builder.input(RNG_INPUT, "int64", (2,))
            self.builder.metadata["rng_input"] = RNG_INPUT
        return self._rng

    def next_salt(self) -> int:
        """A fresh salt: each stochastic call of the trace draws an independent stream."""
        s = self.salt
        self.salt += 1
        return s

    # ---- module scopes ----
    @contextlib.contextmanager
    def module_scope(self, module: Any) -> Iterator[str]:
        """Name the nodes created inside after ``module``'s path (``encoder.layers.0.attn``)."""
        path = self.module_paths.get(id(module))
        if path is None:
            path = type(module).__name__.lower()
            if self._stack and self._stack[-1]:
                path = f"{self._stack[-1]}.{path}"
        parent = self._stack[-1] if self._stack else ""
        b = self.builder
        self._stack.append(path)
        try:
            if not path:
                yield path
            elif not parent or path.startswith(parent + "."):
                with b.scope(path[len(parent) + 1:] if parent else path):
                    yield path
            else:
                # a module called from outside its parent (weight sharing): use its own path
                saved = b._scope
                b._scope = [path]
                try:
                    yield path
                finally:
                    b._scope = saved
        finally:
            self._stack.pop()


def state_for(builder: GraphBuilder) -> TraceState:
    """The DSL state attached to ``builder`` (created on first use)."""
    st = _STATES.get(builder)
    if st is None:
        st = TraceState(builder)
        _STATES[builder] = st
    return st


def current_state() -> TraceState:
    """The DSL state of the active builder; raises GraphError outside a trace or builder."""
    return state_for(current_builder())
