"""Facet tables: per-op rules (kernels, lowerings, VJPs, ...) keyed by :class:`OpDef`.

Each consumer package owns its table; a completeness test walks :data:`OPS` and fails on any op
that lacks a rule, unless the op has a decomposition the table may fall back to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import OpError
from .opdef import OPS, OpDef, Trait

__all__ = ["OpTable"]

F = TypeVar("F")


class OpTable(Generic[F]):
    """Rules for one facet of every op (a backend, autodiff, ...), keyed by OpDef objects."""

    def __init__(self, name: str, *, only: Trait | None = None) -> None:
        self.name = name
        self.only = only  # the table covers only ops with this trait (e.g. DIFFERENTIABLE)
        self._rules: dict[OpDef, F] = {}

    def register(self, *ops: OpDef) -> Callable[[F], F]:
        """Decorator registering one rule for the given ops; a second rule for an op raises."""

        def deco(rule: F) -> F:
            for op in ops:
                if not isinstance(op, OpDef):
                    raise OpError(f"{self.name}: register() takes OpDef objects, got {op!r}")
                if op in self._rules:
                    raise OpError(f"{self.name}: op '{op.name}' is registered twice")
                self._rules[op] = rule
            return rule

        return deco

    def __contains__(self, op: OpDef) -> bool:
        return op in self._rules

    def __getitem__(self, op: OpDef) -> F:
        try:
            return self._rules[op]
        except KeyError:
            raise OpError(f"{self.name}: no rule for op '{op.name}'", op=op.name) from None

    def get(self, op: OpDef) -> F | None:
        """The rule for ``op`` or None."""
        return self._rules.get(op)

    def __iter__(self) -> Iterator[OpDef]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def required(self, op: OpDef) -> bool:
        """True if this table must cover ``op``."""
        return self.only is None or op.has(self.only)

    def missing(self, *, allow_decompose: bool = True) -> list[str]:
        """Names of registered ops this table should cover but has no rule (or decomposition)."""
        return sorted(
            op.name for op in OPS.values()
            if self.required(op) and op not in self._rules
            and not (allow_decompose and op.decompose is not None)
        )
