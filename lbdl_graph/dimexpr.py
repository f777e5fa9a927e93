"""Integer expressions over symbolic dims, in one canonical form.

A symbolic dim in a shape is a string (``"seq"``, ``"batch*seq"``, ``"(H-3)//2+1"``). This
module reads such strings as polynomials over atoms (dim names, or an opaque quotient such as
``(seq+1)//2`` that does not divide exactly), does the arithmetic that shape computations need
(``+ - * //``), and writes the result back in one canonical spelling, so that two dims are equal
exactly when their canonical strings are. Dims are never negative.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from .errors import ShapeError

__all__ = ["DimExpr", "canonical", "dim_add", "dim_div", "dim_mul", "dim_prod", "dim_sub",
           "dims_equal", "parse"]

Dim = int | str
Monomial = tuple[str, ...]  # sorted atoms; () is the constant term
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DimExpr:
    """A polynomial with integer coefficients over atoms (immutable)."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, int]) -> None:
        self.terms = {m: c for m, c in terms.items() if c != 0}

    @staticmethod
    def const(c: int) -> DimExpr:
        return DimExpr({(): int(c)})

    @staticmethod
    def atom(name: str) -> DimExpr:
        return DimExpr({(name,): 1})

    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    def value(self) -> int:
        return self.terms.get((), 0)

    def __add__(self, o: DimExpr) -> DimExpr:
        t = dict(self.terms)
        for m, c in o.terms.items():
            t[m] = t.get(m, 0) + c
        return DimExpr(t)

    def __neg__(self) -> DimExpr:
        return DimExpr({m: -c for m, c in self.terms.items()})

    def __sub__(self, o: DimExpr) -> DimExpr:
        return self + (-o)

    def __mul__(self, o: DimExpr) -> DimExpr:
        t: dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m = tuple(sorted(m1 + m2))
                t[m] = t.get(m, 0) + c1 * c2
        return DimExpr(t)

    def floordiv(self, o: DimExpr) -> DimExpr:
        """Exact division where every term divides, else an opaque quotient atom."""
        if o.is_const() and o.value() == 0:
            raise ShapeError(f"dim expression {self.dim()} is divided by zero")
        if len(o.terms) == 1:
            ((dm, dc),) = o.terms.items()
            out: dict[Monomial, int] = {}
            for m, c in self.terms.items():
                rest = list(m)
                ok = c % dc == 0
                for a in dm:
                    if a in rest:
                        rest.remove(a)
                    else:
                        ok = False
                if not ok:
                    break
                out[tuple(rest)] = c // dc
            else:
                return DimExpr(out)
        if self.is_const() and o.is_const():
            return DimExpr.const(int(self.value() / o.value()))
        return DimExpr.atom(f"({_fmt(self)})//({_fmt(o)})")

    def dim(self) -> Dim:
        """The canonical dim: an int when constant, else the canonical string."""
        return self.value() if self.is_const() else _fmt(self)


def _atom_str(a: str) -> str:
    return a if _NAME.match(a) else f"({a})"


def _fmt(e: DimExpr) -> str:
    if len(e.terms) == 1:
        ((m, c),) = e.terms.items()
        if c == 1 and len(m) == 1:
            return m[0]  # one atom as it is (a name or an opaque quotient)
    parts: list[str] = []
    for m in sorted((m for m in e.terms if m), key=lambda m: (m, len(m))):
        c = e.terms[m]
        body = "*".join(_atom_str(a) for a in m)
        if c == 1:
            parts.append(body)
        elif c == -1:
            parts.append(f"-{body}")
        else:
            parts.append(f"{body}*{c}")
    const = e.terms.get((), 0)
    if const or not parts:
        parts.append(str(const))
    out = parts[0]
    for p in parts[1:]:
        out += p if p.startswith("-") else f"+{p}"
    return out


def _from_ast(n: ast.AST, text: str) -> DimExpr:
    if isinstance(n, ast.Expression):
        return _from_ast(n.body, text)
    if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
        return DimExpr.const(n.value)
    if isinstance(n, ast.Name):
        return DimExpr.atom(n.id)
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
        v = _from_ast(n.operand, text)
        return -v if isinstance(n.op, ast.USub) else v
    if isinstance(n, ast.BinOp):
        a, b = _from_ast(n.left, text), _from_ast(n.right, text)
        if isinstance(n.op, ast.Add):
            return a + b
        if isinstance(n.op, ast.Sub):
            return a - b
        if isinstance(n.op, ast.Mult):
            return a * b
        if isinstance(n.op, ast.FloorDiv):
            return a.floordiv(b)
        if isinstance(n.op, ast.Mod):
            return DimExpr.atom(f"({_fmt(a)})%({_fmt(b)})")
    return DimExpr.atom(text)


def parse(d: Dim | DimExpr) -> DimExpr:
    """A dim (int or expression string) as a DimExpr; unparsable strings become one atom."""
    if isinstance(d, DimExpr):
        return d
    if isinstance(d, bool):
        raise ShapeError(f"invalid dim {d!r}")
    if isinstance(d, int):
        return DimExpr.const(d)
    if hasattr(d, "__index__"):
        return DimExpr.const(int(d))
    if _NAME.match(d):
        return DimExpr.atom(d)
    try:
        return _from_ast(ast.parse(d, mode="eval"), d)
    except SyntaxError:
        return DimExpr.atom(d)


def canonical(d: Dim) -> Dim:
    """The canonical spelling of a dim (``"seq+1-1"`` -> ``"seq"``, ``"2*4"`` -> 8)."""
    return parse(d).dim()


def dims_equal(a: Dim, b: Dim) -> bool:
    """True if two dims are the same expression."""
    return a == b or canonical(a) == canonical(b)


def dim_add(a: Dim, b: Dim) -> Dim:
    return (parse(a) + parse(b)).dim()


def dim_sub(a: Dim, b: Dim) -> Dim:
    return (parse(a) - parse(b)).dim()


def dim_mul(a: Dim, b: Dim) -> Dim:
    return (parse(a) * parse(b)).dim()


def dim_div(a: Dim, b: Dim) -> Dim:
    """Integer division (exact where it divides; dims are non-negative, so floor = trunc)."""
    return parse(a).floordiv(parse(b)).dim()


def dim_prod(dims: Iterable[Dim]) -> Dim:
    out = DimExpr.const(1)
    for d in dims:
        out = out * parse(d)
    return out.dim()
