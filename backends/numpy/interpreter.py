"""The NumPy reference interpreter: runs any verified graph on NumPy arrays.

The graph is compiled once into a flat plan of (kernel, input slots, output slots, slots to free)
so that per-node overhead stays around a microsecond, and every intermediate is released right
after its last use (liveness), keeping peak memory near the minimum. Elementwise ufunc ops write
into an input that dies at the node where that is provably safe (see :mod:`.inplace`), which
saves an allocation and lowers the peak; results are bit-identical to ``inplace=False``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph import ops, shapes
from lbdl_graph.analysis import last_uses
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import (
    ExecutionError,
    InputError,
    LbdlError,
    NumericError,
    OpError,
    ResourceError,
)
from lbdl_graph.graph import Graph, Node, Value
from lbdl_graph.limits import check_alloc, check_static_sizes, max_alloc_bytes
from lbdl_graph.passes.plan_memory import MemoryReport, memory_report
from lbdl_graph.verify import verify

from .inplace import make_inplace, may_alias, plan_inplace, value_roots
from .kernels import KERNELS

__all__ = ["Interpreter", "MemoryReport", "NodeProfile", "run"]


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """Time and output bytes of one node in one run; ``inplace``: it wrote into an input."""

    node: str
    op: str
    seconds: float
    out_bytes: int
    inplace: bool = False


@dataclass(slots=True)
class _Step:
    fn: Callable[..., Any]
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    frees: tuple[int, ...]
    node: Node
    multi: bool  # the kernel returns a tuple (even for a one-piece split)
    inplace: Callable[[list[Any]], Any] | None = None  # fn(env): may write into a dying input


_BODY_OPS = frozenset({ops.if_, ops.loop, ops.scan})  # kernels that run bodies take the mode


def _identity_kernel(x: np.ndarray, *_: Any, **__: Any) -> np.ndarray:
    return x


def _decomposed_kernel(node: Node) -> Callable[..., Any]:
    """Run an op without a kernel through its decomposition (a small nested graph)."""
    b = GraphBuilder(f"{node.op.name}_decomposed")
    ins = [b.input(f"in{i}", v.type.dtype, v.type.shape) if v is not None else None
           for i, v in enumerate(node.inputs)]
    with b:
        out = node.op.decompose(*ins, **node.attrs)  # type: ignore[misc]
    outs = list(out) if isinstance(out, tuple | list) else [out]
    sub = Interpreter(b.build(outs, verify=False), verify_graph=False)
    names = [v.name for v in ins if v is not None]

    def kernel(*arrays: Any, **_: Any) -> Any:
        res = sub.run(dict(zip(names, [a for a in arrays if a is not None], strict=True)))
        vals = list(res.values())
        return vals[0] if len(vals) == 1 else tuple(vals)

    return kernel


class Interpreter:
    """A graph compiled for repeated execution on NumPy.

    Args:
        graph: the graph to run (verified unless ``verify_graph`` is False).
        training: when False, dropout nodes pass their input through (evaluation mode).
        check_numerics: raise :class:`NumericError` at the first node producing NaN or Inf.
        check_types: compare every kernel output with its declared type (debugging).
        profile: record a :class:`NodeProfile` per node in ``self.last_profile``.
        inplace: let elementwise ufunc ops overwrite an input that dies at the node, when a
            plan-time and a run-time check (owned, unshared, contiguous) both allow it.
    """

    def __init__(self, graph: Graph, *, training: bool = True, check_numerics: bool = False,
                 check_types: bool = False, profile: bool = False,
                 verify_graph: bool = True, inplace: bool = True) -> None:
        if verify_graph:
            verify(graph)
        self.graph = graph
        self.training = training
        self.check_numerics = check_numerics
        self.check_types = check_types
        self.profile = profile
        self.last_profile: list[NodeProfile] = []
        slot: dict[Value, int] = {}
        for v in graph.iter_values():
            slot[v] = len(slot)
        self._nslots = len(slot)
        check_static_sizes(graph)
        self._input_slots = [(v, slot[v]) for v in graph.inputs]
        self._param_slots = [(p, slot[p.value]) for p in graph.params]
        self._output_slots = [(v.name, slot[v]) for v in graph.outputs]
        # outputs that are (views of) a caller's input or a parameter's data are returned as
        # copies, so that writing into a result never changes the graph or the caller's arrays
        roots = value_roots(graph, training=training)
        held = set(graph.inputs) | {p.value for p in graph.params}
        self._copied_outputs = frozenset(slot[v] for v in graph.outputs
                                         if roots.get(v, v) in held)
        keep = {slot[v] for v in graph.inputs} | {slot[p.value] for p in graph.params}
        frees = last_uses(graph)
        self.inplace = inplace
        picks = plan_inplace(graph, training=training) if inplace else {}
        self._inplace_at = {graph.nodes[i].name: p[0] for i, p in picks.items()}
        self._steps: list[_Step] = []
        for i, (node, dead) in enumerate(zip(graph.nodes, frees, strict=True)):
            step = _Step(
                self._kernel_for(node),
                tuple(slot[v] if v is not None else -1 for v in node.inputs),
                tuple(slot[v] for v in node.outputs),
                tuple(slot[v] for v in dead if slot[v] not in keep),
                node,
                not isinstance(node.op.outputs, int) or node.op.outputs > 1,
            )
            if i in picks:
                step.inplace = make_inplace(node, step.fn, step.ins, picks[i])
            self._steps.append(step)
        self._params_env = [(s, p.data) for p, s in self._param_slots]
        self._sizes_ok: set[tuple[object, ...]] = set()

    def _kernel_for(self, node: Node) -> Callable[..., Any]:
        op = node.op
        if op is ops.dropout and not self.training:
            return _identity_kernel
        kernel = KERNELS.get(op)
        if kernel is not None and op in _BODY_OPS and not self.training:
            return functools.partial(kernel, training=False, **node.attrs)
        if kernel is None:
            if op.decompose is None:
                raise OpError(f"numpy backend: no kernel for op '{op.name}'", node=node.name,
                              op=op.name, source=node.source)
            return _decomposed_kernel(node)
        return functools.partial(kernel, **node.attrs) if node.attrs else kernel

    def _bind_inputs(self, env: list[Any], inputs: Mapping[str, Any]) -> None:
        names = {v.name for v, _ in self._input_slots}
        unknown = sorted(set(inputs) - names)
        if unknown:
            raise InputError(f"unknown input(s) {unknown} for graph '{self.graph.name}'; "
                             f"expected {sorted(names)}")
        dims: dict[str, tuple[int, str]] = {}
        for v, s in self._input_slots:
            if v.name not in inputs:
                raise InputError(f"missing input '{v.name}' ({v.type}) for graph "
                                 f"'{self.graph.name}'")
            arr = inputs[v.name]
            if not isinstance(arr, np.ndarray):
                arr = np.asarray(arr, dtype=v.type.dtype.numpy)
            if arr.dtype != v.type.dtype.numpy:
                raise InputError(f"input '{v.name}' expects dtype {v.type.dtype.name}, got "
                                 f"{arr.dtype}", hint=f"convert with .astype({v.type.dtype.name})")
            if arr.ndim != v.type.ndim:
                raise InputError(f"input '{v.name}' expects {v.type} (rank {v.type.ndim}), got "
                                 f"shape {list(arr.shape)}")
            for d, n in zip(v.type.shape, arr.shape, strict=True):
                if isinstance(d, int) and d != n:
                    raise InputError(f"input '{v.name}' expects {v.type}, got shape "
                                     f"{list(arr.shape)}")
                if isinstance(d, str):
                    if d in dims and dims[d][0] != n:
                        raise InputError(f"dim {d} is {dims[d][0]} in input '{dims[d][1]}' but "
                                         f"{n} in input '{v.name}' (shape {list(arr.shape)})")
                    dims.setdefault(d, (n, v.name))
            env[s] = arr
        if dims:
            self._check_sizes({d: n for d, (n, _) in dims.items()})

    def _check_sizes(self, dims: Mapping[str, int]) -> None:
        """Refuse a run whose symbolic value shapes, at these dims, exceed the allocation limit
        (before any kernel allocates; checked once per set of dims)."""
        key = (max_alloc_bytes(), *sorted(dims.items()))
        if key in self._sizes_ok:
            return
        for node in self.graph.nodes:
            for v in node.outputs:
                if all(isinstance(d, int) for d in v.shape):
                    continue  # checked when the interpreter was built
                try:
                    shape = [shapes.eval_dim(d, dims) for d in v.shape]
                except LbdlError:
                    continue  # a data-dependent dim: the kernel's own checks apply
                check_alloc(shape, v.type.dtype.itemsize, f"value %{v.name} at {dict(dims)}",
                            node=node.name, op=node.op.name)
        if len(self._sizes_ok) < 64:
            self._sizes_ok.add(key)

    def run(self, inputs: Mapping[str, Any] | None = None,
            params: Mapping[str, np.ndarray] | None = None, *,
            on_value: Mapping[str, Callable[[Any], None]] | None = None,
            poll: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
        """Run the graph; returns the outputs by name. ``params`` overrides parameter data.

        ``on_value`` maps value names to callbacks called with the array as soon as the node
        producing it has run (the array must not be written to); ``poll`` is called after every
        node. Both let a caller start work on early results (data-parallel gradient buckets).
        """
        env: list[Any] = [None] * self._nslots
        for s, data in self._params_env:
            env[s] = data
        if params:
            by_name = {p.name: s for p, s in self._param_slots}
            for name, data in params.items():
                if name not in by_name:
                    raise InputError(f"unknown parameter '{name}' for graph '{self.graph.name}'")
                env[by_name[name]] = data
        self._bind_inputs(env, inputs or {})
        # overflow/invalid warnings are not errors here: check_numerics reports NaN/Inf precisely
        with np.errstate(all="ignore"):
            if self.profile or self.check_numerics or self.check_types:
                self._run_checked(env)
            elif on_value or poll:
                self._run_hooked(env, on_value or {}, poll)
            else:
                self._run_fast(env)
        copied = self._copied_outputs
        return {name: env[s].copy() if s in copied else env[s] for name, s in self._output_slots}

    def run_positional(self, arrays: list[Any]) -> list[np.ndarray]:
        """Run on inputs given in the graph's input order; outputs in order (a name may repeat,
        as in a control-flow body that returns one value twice)."""
        if len(arrays) != len(self._input_slots):
            raise InputError(f"graph '{self.graph.name}' takes {len(self._input_slots)} inputs, "
                             f"got {len(arrays)}")
        env: list[Any] = [None] * self._nslots
        for s, data in self._params_env:
            env[s] = data
        self._bind_inputs(env, {v.name: a for (v, _), a in zip(self._input_slots, arrays,
                                                                 strict=True)})
        with np.errstate(all="ignore"):
            self._run_fast(env)
        copied = self._copied_outputs
        return [env[s].copy() if s in copied else env[s] for _, s in self._output_slots]

    def inplace_nodes(self) -> list[str]:
        """Names of the nodes planned to run in place (each still checks at run time)."""
        return [s.node.name for s in self._steps if s.inplace is not None]

    def memory_report(self, bindings: Mapping[str, int] | None = None) -> MemoryReport:
        """Planned memory of one run for the given symbolic dims, with the in-place writes
        and views of this interpreter (see :class:`~lbdl_graph.passes.plan_memory.MemoryReport`).
        """
        return memory_report(self.graph, bindings, in_place=self._inplace_at,
                             aliases=lambda n: may_alias(n, training=self.training))

    def _run_fast(self, env: list[Any]) -> None:
        # No local may keep an array past its step: the in-place check counts references.
        step: _Step | None = None
        try:
            for step in self._steps:
                if step.inplace is not None:
                    env[step.outs[0]] = step.inplace(env)
                elif step.multi:
                    res = step.fn(*[env[i] if i >= 0 else None for i in step.ins])
                    for o, r in zip(step.outs, res, strict=True):
                        env[o] = r
                    res = r = None
                else:
                    env[step.outs[0]] = step.fn(*[env[i] if i >= 0 else None for i in step.ins])
                for f in step.frees:
                    env[f] = None
        except LbdlError as e:
            assert step is not None  # only a step raises
            raise e.with_context(node=step.node.name, op=step.node.op.name,
                                 source=step.node.source) from None
        except Exception as e:  # a kernel failed: name the node and the user's line
            assert step is not None
            raise self._kernel_error(step, env, e) from None

    def _run_hooked(self, env: list[Any], on_value: Mapping[str, Callable[[Any], None]],
                    poll: Callable[[], None] | None) -> None:
        """_run_fast with callbacks (see :meth:`run`)."""
        names = {v.name for v in self.graph.iter_values()}
        unknown = sorted(set(on_value) - names)
        if unknown:
            raise InputError(f"on_value names unknown values {unknown} of graph "
                             f"'{self.graph.name}'")
        hooks: dict[int, list[tuple[int, Callable[[Any], None]]]] = {}
        for i, planned in enumerate(self._steps):
            for o, v in zip(planned.outs, planned.node.outputs, strict=True):
                if v.name in on_value:
                    hooks.setdefault(i, []).append((o, on_value[v.name]))
        step: _Step | None = None
        caller = False  # an error raised by a callback is the caller's: it passes unchanged
        try:
            for i, step in enumerate(self._steps):
                if step.inplace is not None:
                    env[step.outs[0]] = step.inplace(env)
                elif step.multi:
                    res = step.fn(*[env[j] if j >= 0 else None for j in step.ins])
                    for o, r in zip(step.outs, res, strict=True):
                        env[o] = r
                    res = r = None
                else:
                    env[step.outs[0]] = step.fn(*[env[j] if j >= 0 else None for j in step.ins])
                caller = True
                for o, fn in hooks.get(i, ()):
                    fn(env[o])
                for f in step.frees:
                    env[f] = None
                if poll is not None:
                    poll()
                caller = False
        except Exception as e:
            if caller or step is None:
                raise
            if not isinstance(e, LbdlError):
                raise self._kernel_error(step, env, e) from None
            raise e.with_context(node=step.node.name, op=step.node.op.name,
                                 source=step.node.source) from None

    def _run_checked(self, env: list[Any]) -> None:
        self.last_profile = []
        args: list[Any] | None  # set to None after each step, as res and results
        results: tuple[Any, ...] | None
        for step in self._steps:
            args = [] if step.inplace else [env[i] if i >= 0 else None for i in step.ins]
            t0 = time.perf_counter()
            try:
                res = step.inplace(env) if step.inplace else step.fn(*args)
            except LbdlError as e:
                raise e.with_context(node=step.node.name, op=step.node.op.name,
                                     source=step.node.source) from None
            except Exception as e:
                raise self._kernel_error(step, env, e) from None
            dt = time.perf_counter() - t0
            results = tuple(res) if step.multi else (res,)
            for o, r, v in zip(step.outs, results, step.node.outputs, strict=True):
                env[o] = r
                self._check_output(step.node, v, r)
            if self.profile:
                nbytes = sum(int(getattr(r, "nbytes", 0)) for r in results)
                wrote = step.inplace is not None and any(res is env[i] for i in step.ins)
                self.last_profile.append(NodeProfile(step.node.name, step.node.op.name, dt,
                                                     nbytes, wrote))
            for f in step.frees:
                env[f] = None
            args = res = results = r = None  # the in-place check counts references

    def _check_output(self, node: Node, v: Value, r: Any) -> None:
        if self.check_types:
            ok = isinstance(r, np.ndarray) and r.dtype == v.type.dtype.numpy and r.ndim == v.ndim
            ok = ok and all(not isinstance(d, int) or d == n for d, n in zip(v.shape, r.shape,
                                                                              strict=True))
            if not ok:
                got = f"{getattr(r, 'dtype', type(r).__name__)}{list(getattr(r, 'shape', []))}"
                raise ExecutionError(f"kernel output %{v.name} is {got}, declared {v.type}",
                                     node=node.name, op=node.op.name, source=node.source)
        if (self.check_numerics and isinstance(r, np.ndarray) and r.dtype.kind == "f"
                and not np.isfinite(r).all()):
            kind = "NaN" if np.isnan(r).any() else "Inf"
            raise NumericError(f"{kind} first appears in %{v.name} ({v.type})", node=node.name,
                               op=node.op.name, source=node.source)

    @staticmethod
    def _kernel_error(step: _Step | None, env: list[Any], e: Exception) -> LbdlError:
        if step is None:
            return ExecutionError(f"execution failed: {e}")
        if isinstance(e, MemoryError):  # numpy's _ArrayMemoryError names the bytes
            return ResourceError(f"out of memory in kernel: {e}", node=step.node.name,
                                 op=step.node.op.name, source=step.node.source,
                                 hint="raise the machine's memory or shrink the inputs")
        shapes = ", ".join(
            f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else repr(a)
            for a in (env[i] if i >= 0 else None for i in step.ins)
        )
        return ExecutionError(f"{type(e).__name__} in kernel: {e} (inputs: {shapes})",
                              node=step.node.name, op=step.node.op.name, source=step.node.source)


def run(graph: Graph, inputs: Mapping[str, Any] | None = None, **options: Any
        ) -> dict[str, np.ndarray]:
    """Run ``graph`` once on the NumPy backend (see :class:`Interpreter` for options)."""
    return Interpreter(graph, **options).run(inputs)
