"""Pattern rewriting: a small pattern language over OpDefs and a fixpoint rewrite engine.

::

    x, w, b = P.var("x"), P.var("w"), P.var("b")
    RULES = RuleSet("fusion", [
        # matmul(x, w) + b -> linear(x, w, b)   (b + matmul also matches: add is COMMUTATIVE)
        Rule("matmul_add_to_linear", pat.add(pat.matmul(x, w), b), make_linear),
    ])
    result = rewrite_to_fixpoint(graph, RULES)

``pat.<op>(*args, **attrs)`` (or ``Pat(op, ...)``) matches a node of that op; an attribute is
matched by value or by a predicate. ``P.var`` binds any value (each name to one value),
``P.const`` matches the output of a ``constant`` node, and a plain number is a ``P.const`` with
that value. The replacement function gets the bindings as keyword arguments, builds new nodes by
calling ops (a builder is active) and returns the new value(s), or None for "no match".

Binary ops with ``Trait.COMMUTATIVE`` match in both operand orders (the commuted variants are
generated while matching, with backtracking), and a sub-pattern object used twice must match
the same value both times. By default the inner nodes of a match must be used only inside the
match, so a rewrite never duplicates work; ``Rule(..., shared=True)`` lifts that for rules that
only remove work.

The engine sweeps the nodes in order, trying the rules rooted at each, and repeats until a sweep
fires nothing. Untouched nodes stay the same objects. A replaced node's outputs keep their
Value objects (and so their names) whenever the replacement creates a new node for them; a
graph output replaced by an existing value gets an identity node carrying its name. Nodes and
parameters a rewrite leaves unused are dropped; dead code that was already there is not. The
nodes a rule builds get the common scope of the nodes it matched (``Node.scope``) and the origin
``"<rule set>:<rule>"``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder, current_builder
from lbdl_graph.errors import GraphError, LbdlError, OpError
from lbdl_graph.graph import Graph, Node, Param, Value, common_scope
from lbdl_graph.opdef import OPS, OpDef, Trait
from lbdl_graph.source import source_override
from lbdl_graph.types import TensorType

from .base import PassResult

__all__ = [
    "Const",
    "P",
    "Pat",
    "Pattern",
    "RewriteError",
    "Rule",
    "RuleSet",
    "Var",
    "constant_value",
    "is_graph_output",
    "new_param",
    "operands",
    "param_of",
    "pat",
    "rewrite_to_fixpoint",
    "static_value",
    "try_infer",
]


class RewriteError(LbdlError):
    """A rewrite rule misbehaved (wrong output type or count) or rules never reach a fixpoint."""


class Pattern:
    """Something that matches a value of the graph."""


@dataclasses.dataclass(frozen=True, eq=False)
class Var(Pattern):
    """Binds any value to ``name`` (the same name must bind the same value everywhere)."""

    name: str
    where: Callable[[Value], bool] | None = None
    optional: bool = False  # also matches an absent optional input (binds None)


@dataclasses.dataclass(frozen=True, eq=False)
class Const(Pattern):
    """Matches the output of a ``constant`` node, optionally one whose every element == value."""

    name: str | None = None
    value: float | None = None
    where: Callable[[np.ndarray], bool] | None = None


class Pat(Pattern):
    """Matches a node of ``op`` (or of any op in a tuple) whose inputs match ``args``.

    Keyword arguments match attributes, by value or with a predicate. ``bind`` binds the matched
    Node under that name; ``output`` picks which output of a multi-output node is matched.
    """

    def __init__(self, op: OpDef | Sequence[OpDef], *args: Pattern | float | None,
                 bind: str | None = None, output: int = 0, **attrs: Any) -> None:
        self.ops = (op,) if isinstance(op, OpDef) else tuple(op)
        for o in self.ops:
            unknown = sorted(set(attrs) - set(o.attr_map))
            if unknown:
                raise OpError(f"pattern for {o.name}: unknown attribute(s) {unknown}")
        self.args = tuple(Const(value=a) if isinstance(a, int | float) else a for a in args)
        self.bind = bind
        self.output = output
        # literal values are normalised as the op would store them ("f32" -> DType, [] -> ())
        self.attrs = {k: v if callable(v) else self.ops[0].attr_map[k].coerce(v)
                      for k, v in attrs.items()}

    def __repr__(self) -> str:
        names = "|".join(o.name for o in self.ops)
        return f"{names}({', '.join(map(repr, self.args))})"

    def attrs_match(self, node: Node) -> bool:
        """True if the node's attributes satisfy every attribute constraint."""
        for k, want in self.attrs.items():
            have = node.attrs.get(k)
            if callable(want):
                if not want(have):
                    return False
            elif not _equal(have, want):
                return False
        return True


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


class _PatNamespace:
    """``pat.add(x, y)`` is ``Pat(ops.add, x, y)``; names are op names (``pat.pow``)."""

    def __getattr__(self, name: str) -> Callable[..., Pat]:
        op = OPS.get(name) or OPS.get(name.rstrip("_"))
        if op is None:
            raise AttributeError(f"no op named {name!r}")
        return functools.partial(Pat, op)


class P:
    """Leaf patterns: ``P.var("x")`` and ``P.const("eps")``."""

    var = Var
    const = Const


pat = _PatNamespace()

ReplaceFn = Callable[..., "Value | tuple[Value, ...] | None"]


@dataclasses.dataclass(frozen=True, eq=False)
class Rule:
    """A named rewrite: when ``pattern`` matches at a node, ``replace(**bindings)`` builds its
    replacement (or returns None to decline). ``shared`` lets inner nodes have other users."""

    name: str
    pattern: Pat
    replace: ReplaceFn
    shared: bool = False


class RuleSet:
    """An ordered list of rules, indexed by the op of their root pattern."""

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        self.name = name
        self.rules = tuple(rules)
        names = Counter(r.name for r in self.rules)
        twice = sorted(n for n, k in names.items() if k > 1)
        if twice:
            raise OpError(f"rule set {name}: duplicate rule names {twice}")
        self._by_op: dict[OpDef, list[Rule]] = {}
        for r in self.rules:
            for op in r.pattern.ops:
                self._by_op.setdefault(op, []).append(r)

    def for_op(self, op: OpDef) -> Sequence[Rule]:
        """The rules whose root pattern can match a node of ``op``, in order."""
        return self._by_op.get(op, ())

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)


# ------------------------------------------------------------------------------------ matching

Env = dict[Any, Any]
Edge = tuple[Node, Node, int]  # (producer, consumer, input slot)


class _Sweep:
    """One pass over the nodes: the graph under construction and the state matching reads."""

    def __init__(self, graph: Graph, name: str = "rules") -> None:
        self.graph = graph
        self.name = name  # the rule set's name: the first half of the nodes' origin
        self.builder = GraphBuilder.from_graph(graph, copy_nodes=False)
        self.producer: dict[Value, Node] = {}
        self.subst: dict[Value, Value] = {}
        self.outputs = set(graph.outputs)
        self.created: set[Node] = set()
        self.uses: Counter[Value] = Counter(
            v for n in graph.nodes for v in n.inputs if v is not None)
        self.used_at_start = set(self.uses)

    # ---- matching ----
    def match_root(self, p: Pat, node: Node) -> Iterator[tuple[Env, frozenset[Edge]]]:
        if node.op not in p.ops or not p.attrs_match(node):
            return
        env: Env = {p.bind: node} if p.bind else {}
        yield from self._args(p, node, env, frozenset())

    def _args(self, p: Pat, node: Node, env: Env, edges: frozenset[Edge]
              ) -> Iterator[tuple[Env, frozenset[Edge]]]:
        inputs = list(node.inputs) + [None] * (len(p.args) - len(node.inputs))
        if any(v is not None for v in inputs[len(p.args):]):
            return
        orders = [list(range(len(p.args)))]
        if node.op.has(Trait.COMMUTATIVE) and len(p.args) == 2:
            orders.append([1, 0])

        def chain(order: list[int], i: int, env: Env, edges: frozenset[Edge]
                  ) -> Iterator[tuple[Env, frozenset[Edge]]]:
            if i == len(order):
                yield env, edges
                return
            slot = order[i]
            for env2, edges2 in self._match(p.args[slot], inputs[i], node, i, env, edges):
                yield from chain(order, i + 1, env2, edges2)

        for order in orders:
            yield from chain(order, 0, env, edges)

    def _match(self, p: Pattern | None, v: Value | None, consumer: Node, slot: int, env: Env,
               edges: frozenset[Edge]) -> Iterator[tuple[Env, frozenset[Edge]]]:
        if p is None:
            if v is None:
                yield env, edges
        elif isinstance(p, Var):
            if v is None and not p.optional:
                return
            if p.name in env:
                if env[p.name] is v:
                    yield env, edges
            elif v is None or p.where is None or p.where(v):
                yield {**env, p.name: v}, edges
        elif v is None:
            return
        elif isinstance(p, Const):
            arr = self.constant(v)
            if arr is None or (p.value is not None and not np.all(arr == p.value)):
                return
            if p.where is not None and not p.where(arr):
                return
            if p.name is None:
                yield env, edges
            elif p.name not in env or env[p.name] is v:
                yield {**env, p.name: v}, edges
        elif isinstance(p, Pat):
            node = self.producer.get(v)
            if node is None:
                return
            edges = edges | {(node, consumer, slot)}
            if id(p) in env:  # the same sub-pattern object used twice: the same value
                if env[id(p)] is v:
                    yield env, edges
                return
            if node.op not in p.ops or not p.attrs_match(node):
                return
            if p.output >= len(node.outputs) or node.outputs[p.output] is not v:
                return
            env = {**env, id(p): v, **({p.bind: node} if p.bind else {})}
            yield from self._args(p, node, env, edges)

    def exclusive(self, edges: frozenset[Edge]) -> bool:
        """True if every inner node's outputs are used only by the match (not graph outputs)."""
        counts: Counter[Node] = Counter(producer for producer, _, _ in edges)
        for node, n in counts.items():
            if any(v in self.outputs for v in node.outputs):
                return False
            if sum(self.uses[v] for v in node.outputs) != n:
                return False
        return True

    # ---- lookups for replacement functions ----
    def constant(self, v: Value) -> np.ndarray | None:
        node = self.producer.get(v)
        return node.attrs["value"] if node is not None and node.op is ops.constant else None

    # ---- building ----
    def emit(self, node: Node) -> None:
        self.builder.emit(node)
        self.producer.update((v, node) for v in node.outputs)

    def remap(self, node: Node) -> Node:
        new = tuple(self.subst.get(v, v) if v is not None else None for v in node.inputs)
        if all(a is b for a, b in zip(new, node.inputs, strict=True)):
            return node
        return dataclasses.replace(node, inputs=new)

    def try_rule(self, rule: Rule, root: Node) -> bool:
        b = self.builder
        for env, edges in self.match_root(rule.pattern, root):
            if not rule.shared and not self.exclusive(edges):
                continue
            mark = len(b.nodes)
            prefix = root.name.rpartition("/")[0]  # names stay next to the root's
            scope = common_scope([root.scope, *(n.scope for n, _, _ in edges)])
            kwargs = {k: v for k, v in env.items() if isinstance(k, str)}
            token = _ACTIVE.set(self)
            try:
                with b, b.scope(prefix), b.provenance(scope, f"{self.name}:{rule.name}"), \
                        source_override(root.source):
                    result = rule.replace(**kwargs)
            except BaseException:
                del b.nodes[mark:]
                raise
            finally:
                _ACTIVE.reset(token)
            if result is None:
                del b.nodes[mark:]
                continue
            self._commit(rule, root, result, mark, scope)
            return True
        return False

    def _commit(self, rule: Rule, root: Node, result: Any, mark: int, scope: str) -> None:
        b = self.builder
        results = tuple(result) if isinstance(result, tuple | list) else (result,)
        if len(results) != len(root.outputs):
            raise RewriteError(f"rule {rule.name} returned {len(results)} values for "
                               f"{len(root.outputs)} outputs", node=root.name, op=root.op.name,
                               source=root.source)
        for old, new in zip(root.outputs, results, strict=True):
            if not isinstance(new, Value) or new.type != old.type or new is old:
                got = new.type if isinstance(new, Value) else type(new).__name__
                raise RewriteError(f"rule {rule.name} replaced %{old.name}: {old.type} with "
                                   f"{got}", node=root.name, op=root.op.name, source=root.source)
        tail = b.nodes[mark:]
        del b.nodes[mark:]
        fresh = {v for n in tail for v in n.outputs}
        rename: dict[Value, Value] = {}
        extra: list[Node] = []
        for old, new in zip(root.outputs, results, strict=True):
            if new in fresh and new not in rename:
                rename[new] = old  # the new node takes over the old Value (and its name)
            elif old in self.outputs:
                name = b.unique_name(f"{root.name}/identity", "node")
                extra.append(Node(ops.identity, (new,), (old,), {}, name, root.source, scope,
                                  f"{self.name}:{rule.name}"))
            else:
                self.subst[old] = new
                self.uses[new] += self.uses[old]
        rebuilt = [dataclasses.replace(
            n, inputs=tuple(rename.get(v, v) if v is not None else None for v in n.inputs),
            outputs=tuple(rename.get(v, v) for v in n.outputs), source=root.source)
            for n in tail]
        for n in rebuilt + extra:
            self.emit(n)
            self.created.add(n)
            self.uses.update(v for v in n.inputs if v is not None)
        self.uses.subtract(v for v in root.inputs if v is not None)

    def finish(self) -> Graph:
        """The swept graph, without the nodes and parameters the rewrites left unused."""
        b = self.builder
        live: Counter[Value] = Counter(v for n in b.nodes for v in n.inputs if v is not None)
        kept: list[Node] = []
        for n in reversed(b.nodes):
            unused = all(live[v] == 0 and v not in self.outputs for v in n.outputs)
            orphan = n in self.created or any(v in self.used_at_start for v in n.outputs)
            if unused and orphan:
                live.subtract(v for v in n.inputs if v is not None)
            else:
                kept.append(n)
        kept.reverse()
        old_params = {p.value for p in self.graph.params}
        params = [p for p in b.params
                  if live[p.value] > 0 or p.value in self.outputs
                  or (p.value in old_params and p.value not in self.used_at_start)]
        outputs = [self.subst.get(v, v) for v in self.graph.outputs]
        return self.graph.replace(nodes=kept, params=params, outputs=outputs)


_ACTIVE: ContextVar[_Sweep | None] = ContextVar("lbdl_rewrite_sweep", default=None)


def _sweep_state() -> _Sweep:
    s = _ACTIVE.get()
    if s is None:
        raise GraphError("rewrite helpers can only be called from a rule's replacement function")
    return s


def constant_value(v: Value) -> np.ndarray | None:
    """The data of ``v`` if a ``constant`` node computes it, else None (inside a rule)."""
    return _sweep_state().constant(v)


def static_value(v: Value) -> np.ndarray | None:
    """The data of a constant or a parameter (current data: for inference-only rewrites)."""
    s = _sweep_state()
    arr = s.constant(v)
    if arr is not None:
        return arr
    p = param_of(v)
    return p.data if p is not None else None


def param_of(v: Value) -> Param | None:
    """The parameter whose value is ``v`` (inside a rule), or None."""
    return next((p for p in _sweep_state().builder.params if p.value is v), None)


def try_infer(op: OpDef, *inputs: Value | None, **attrs: Any) -> TensorType | None:
    """The type ``op`` would give these inputs and attributes, or None if its rule rejects them.

    Rules use it to check a replacement before building it: the engine requires replacements
    to keep the type of the value they replace.
    """
    try:
        types = op.infer_types([v.type if v is not None else None for v in inputs],
                               op.check_attrs(attrs))
    except LbdlError:
        return None
    return types[0] if len(types) == 1 else None


def operands(*values: Value | None) -> tuple[Value | None, ...]:
    """The operands without trailing absent ones: ``op(*operands(x, w, None))`` is ``op(x, w)``."""
    n = len(values)
    while n and values[n - 1] is None:
        n -= 1
    return values[:n]


def is_graph_output(v: Value) -> bool:
    """True if ``v`` is one of the graph's outputs (inside a rule)."""
    return v in _sweep_state().outputs


def new_param(base: str, data: np.ndarray, *, trainable: bool = True) -> Value:
    """Add a parameter named ``base`` (or ``base_1``, ...) to the graph being rewritten."""
    b = current_builder()
    name, i = base, 0
    while True:
        try:
            return b.param(name, data, trainable=trainable)
        except GraphError:
            i += 1
            name = f"{base}_{i}"


# ------------------------------------------------------------------------------------- driver


def rewrite_to_fixpoint(graph: Graph, rules: RuleSet | Sequence[Rule], *,
                        max_sweeps: int = 100) -> PassResult:
    """Apply the rules over the graph until none fires; stats count firings per rule name.

    Returns the same graph object with ``changed=False`` when no rule fired.
    """
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet("rules", rules)
    stats: Counter[str] = Counter()
    current = graph
    for _ in range(max_sweeps):
        sweep = _Sweep(current, ruleset.name)
        fired = 0
        for node in current.nodes:
            node = sweep.remap(node)
            for rule in ruleset.for_op(node.op):
                if sweep.try_rule(rule, node):
                    stats[rule.name] += 1
                    fired += 1
                    break
            else:
                sweep.emit(node)
        if not fired:
            return PassResult(current, bool(stats), dict(stats))
        current = sweep.finish()
    raise RewriteError(f"rule set {ruleset.name} reached no fixpoint after {max_sweeps} sweeps "
                       f"(fired: {dict(stats)})")
