"""The printed form of a graph (jaxpr-like, one node per line) and a parser for it.

::

    graph mlp(%x: f32[N,784]):
      param %fc.weight: f32[10,784]
      param %fc.bias: f32[10]
      %0: f32[784,10] = transpose[perm=(1, 0)](%fc.weight)
      %1: f32[N,10] = matmul(%x, %0)
      %2: f32[N,10] = add(%1, %fc.bias)
      return %2

Inputs and parameters keep their names; node outputs are numbered in order. Attributes are
Python literals in brackets, dtypes print by short name (``f32``), tensors as
``tensor(f32[2], [1.0, 2.0])``. A node holding nested graphs (the bodies of ``if``, ``loop``
and ``scan``) ends with ``{`` and lists them, indented, as ``then_branch = graph ...:`` blocks
up to a closing ``}``; each body numbers its own values. ``parse_graph(print_graph(g))``
rebuilds the graph.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .dtypes import DTYPES, DType, dtype
from .errors import LbdlError, ParseError, ResourceError
from .graph import Graph, Value
from .limits import check_alloc
from .opdef import OPS
from .shapes import fmt_shape
from .source import SourceLoc
from .types import TensorType, tensor_type

__all__ = ["format_attr", "parse_graph", "parse_type", "print_graph"]

_PLAIN = re.compile(r"^[A-Za-z0-9_.:/\-]+$")
_SHORT = {d.short: d for d in DTYPES.values()}


def _vname(name: str) -> str:
    return "%" + (name if _PLAIN.match(name) else '"' + name.replace('"', '\\"') + '"')


def format_attr(value: Any, *, max_elems: int | None = 64) -> str:
    """Format one attribute value the way the parser reads it back."""
    if isinstance(value, DType):
        return value.short
    if isinstance(value, np.ndarray):
        t = f"{dtype(value.dtype).short}{fmt_shape(value.shape)}"
        if max_elems is not None and value.size > max_elems:
            return f"tensor({t}, ...)"
        data = value.astype(np.float64) if dtype(value.dtype).is_float else value
        return f"tensor({t}, {_literal(data.tolist())})"
    if isinstance(value, tuple | list):
        inner = ", ".join(format_attr(v, max_elems=max_elems) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return _literal(value)


def _literal(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def print_graph(
    graph: Graph,
    *,
    keep_names: bool = False,
    show_names: bool = False,
    show_source: bool = False,
    show_scopes: bool = False,
    max_elems: int | None = 64,
) -> str:
    """The deterministic text form of ``graph``.

    ``keep_names`` prints node outputs by their real names instead of numbers; ``show_names``,
    ``show_source`` and ``show_scopes`` append ``# node-name @ file:line scope=h.0.attn
    origin=pass:rule`` comments (scope and origin where set), which the parser reads back.
    """
    names: dict[Value, str] = {v: v.name for v in graph.inputs}
    names.update((p.value, p.name) for p in graph.params)
    counter = 0
    for n in graph.nodes:
        for v in n.outputs:
            names[v] = v.name if keep_names else str(counter)
            counter += 1

    def ref(v: Value | None) -> str:
        return "_" if v is None else _vname(names.get(v, v.name))

    ins = ", ".join(f"{ref(v)}: {v.type}" for v in graph.inputs)
    lines = [f"graph {graph.name}({ins}):"]
    for p in graph.params:
        lines.append(f"  {'param' if p.trainable else 'buffer'} {ref(p.value)}: {p.value.type}")
    for n in graph.nodes:
        outs = ", ".join(f"{ref(v)}: {v.type}" for v in n.outputs)
        bodies = {k: a for k, a in n.attrs.items() if isinstance(a, Graph)}
        attrs = ", ".join(f"{k}={format_attr(a, max_elems=max_elems)}" for k, a in n.attrs.items()
                          if k not in bodies)
        line = f"  {outs} = {n.op.name}{f'[{attrs}]' if attrs else ''}"
        line += "(" + ", ".join(ref(v) for v in n.inputs) + ")"
        if bodies:
            line += " {"
        notes = []
        if show_names:
            notes.append(n.name)
        if show_source and n.source is not None:
            notes.append(f"@ {n.source}")
        if show_scopes:
            notes.extend(f"{k}={_tag(v)}" for k, v in (("scope", n.scope), ("origin", n.origin))
                         if v)
        if notes:
            line += "  # " + " ".join(notes)
        lines.append(line)
        for k, sub in bodies.items():  # nested blocks, jaxpr-like: `key = graph ...:` ... `}`
            text = print_graph(sub, keep_names=keep_names, show_names=show_names,
                               show_source=show_source, show_scopes=show_scopes,
                               max_elems=max_elems).splitlines()
            lines.append(f"    {k} = {text[0]}")
            lines.extend(f"    {t}" for t in text[1:])
        if bodies:
            lines.append("  }")
    lines.append("  return " + ", ".join(ref(v) for v in graph.outputs))
    return "\n".join(lines) + "\n"


def _tag(value: str) -> str:
    """A scope or origin as printed: bare when it is one printable word, else a quoted repr."""
    plain = value.isprintable() and not any(c.isspace() or c in "'\"" for c in value)
    return value if plain else repr(value)


# ---------------------------------------------------------------- parsing

_TAG = re.compile(r"(?:^|\s)(scope|origin)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


def _parse_tags(note: str) -> tuple[str, dict[str, str]]:
    """The note without its ``scope=`` / ``origin=`` words, and their values."""
    tags: dict[str, str] = {}
    for m in _TAG.finditer(note):
        raw = m.group(2)
        tags[m.group(1)] = str(ast.literal_eval(raw)) if raw[0] in "'\"" else raw
    return _TAG.sub("", note).strip(), tags



def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _match_bracket(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at ``start``."""
    depth, quote = 0, ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced brackets")


def _strip_comment(line: str) -> tuple[str, str]:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def parse_type(text: str) -> TensorType:
    """Parse ``f32[N,3]`` into a TensorType."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_]+)\[(.*)\]\s*", text)
    if not m or m.group(1) not in _SHORT:
        raise ValueError(f"bad type {text.strip()!r}")
    dims: list[int | str] = []
    for d in _split_top(m.group(2)):
        dims.append(int(d) if re.fullmatch(r"\d+", d) else d)
    return tensor_type(_SHORT[m.group(1)], dims)


class _AtColumn(ValueError):
    """A bad attribute value and its 0-based column in the ``f(...)`` text that was parsed."""

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.col = col


def _eval_attr(node: ast.AST) -> Any:
    try:
        return _eval_attr_raw(node)
    except _AtColumn:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        col = getattr(node, "col_offset", 0)
        raise _AtColumn(f"bad attribute value {ast.unparse(node)!r}: {e}", col) from None


def _eval_attr_raw(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_eval_attr(e) for e in node.elts)
    if isinstance(node, ast.List):
        return [_eval_attr(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_attr(node.operand)
    if isinstance(node, ast.Name):
        special = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}
        if node.id in special:
            return special[node.id]
        if node.id in _SHORT:
            return _SHORT[node.id]
        raise ValueError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tensor":
        if len(node.args) != 2:
            raise ValueError("tensor(...) takes a type and data")
        if isinstance(node.args[1], ast.Constant) and node.args[1].value is Ellipsis:
            raise ValueError("an elided tensor (printed with max_elems) cannot be parsed")
        arg = node.args[0]
        spelled = arg.value if isinstance(arg, ast.Constant) else None
        ttype = parse_type(spelled if isinstance(spelled, str) else ast.unparse(arg))
        raw = _eval_attr(node.args[1])
        with np.errstate(all="raise"):
            try:
                data = np.array(raw, dtype=ttype.dtype.numpy)
            except (OverflowError, ValueError, TypeError, FloatingPointError) as e:
                raise _AtColumn(f"data {ast.unparse(node.args[1])!r} does not fit "
                                f"{ttype.dtype.name}: {e}", node.args[1].col_offset) from None
            if ttype.dtype.is_integer and np.asarray(raw).dtype.kind == "f":
                raise _AtColumn(f"data for {ttype.dtype.name} must be integers",
                                node.args[1].col_offset)
        return data.reshape([int(d) for d in ttype.shape])
    raise ValueError(f"unsupported attribute syntax {ast.unparse(node)!r}")


def _parse_attrs(text: str) -> dict[str, Any]:
    # a scalar's type `f32[]` is no Python expression: read it as the string "f32[]"
    text = re.sub(r"\btensor\(\s*([A-Za-z0-9_]+\[\])", r'tensor("\1"', text)
    call = ast.parse(f"f({text})", mode="eval").body
    assert isinstance(call, ast.Call)
    if call.args:
        raise ValueError("attributes must be written name=value")
    return {kw.arg: _eval_attr(kw.value) for kw in call.keywords if kw.arg}


def _parse_binder(text: str) -> tuple[str, TensorType]:
    m = re.fullmatch(r'\s*%("(?:[^"\\]|\\.)*"|[A-Za-z0-9_.:/\-]+)\s*:\s*(.+?)\s*', text)
    if not m:
        raise ValueError(f"expected '%name: type', got {text.strip()!r}")
    name = m.group(1)
    if name.startswith('"'):
        name = name[1:-1].replace('\\"', '"')
    return name, parse_type(m.group(2))


def _ref_name(text: str) -> str | None:
    text = text.strip()
    if text == "_":
        return None
    if not text.startswith("%"):
        raise ValueError(f"expected a %value, got {text!r}")
    name = text[1:]
    return name[1:-1].replace('\\"', '"') if name.startswith('"') else name


def parse_graph(text: str, params: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse the printed form back into a verified Graph.

    Parameter data comes from ``params`` (by name) or is zero-filled. Errors are
    :class:`~lbdl_graph.errors.ParseError` naming the line. Control-flow bodies are nested
    blocks (``body = graph ...:`` indented under the node, closed by ``}``).
    """
    params = dict(params or {})
    stripped = [(i + 1, _strip_comment(raw)) for i, raw in enumerate(text.splitlines())]
    lines = [(no, code, note) for no, (code, note) in stripped if code.strip()]
    if not lines:
        raise ParseError("empty graph text")
    graph = _parse_lines(lines, params)
    if params:
        raise ParseError(f"data given for unknown parameter(s) {sorted(params)}")
    return graph


_Line = tuple[int, str, str]


def _indent(code: str) -> int:
    return len(code) - len(code.lstrip())


def _split_bodies(lines: list[_Line], start: int) -> tuple[dict[str, list[_Line]], int]:
    """The nested graphs of the node at ``lines[start]`` (which ends with ``{``) and the index
    of the line after its closing ``}``."""
    base = _indent(lines[start][1])
    bodies: dict[str, list[_Line]] = {}
    current: list[_Line] | None = None
    i = start + 1
    while i < len(lines):
        no, code, note = lines[i]
        if code.strip() == "}" and _indent(code) == base:
            return bodies, i + 1
        m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(graph\s.*)", code)
        if m and _indent(code) == base + 2:
            current = bodies.setdefault(m.group(1), [])
            current.append((no, " " * (base + 2) + m.group(2), note))
        elif current is None or _indent(code) <= base + 2:
            raise ParseError(f"line {no}: expected 'name = graph ...' or '}}' in the block of "
                             f"line {lines[start][0]}: {code.strip()}")
        else:
            current.append((no, code, note))
        i += 1
    raise ParseError(f"line {lines[start][0]}: the block opened here is not closed with '}}'")


def _parse_lines(lines: list[_Line], params: dict[str, np.ndarray]) -> Graph:
    from .builder import GraphBuilder

    env: dict[str, Value] = {}
    b: GraphBuilder | None = None
    outputs: list[Value] | None = None
    i = 0
    while i < len(lines):
        no, code, note = lines[i]
        i += 1
        s = code.strip()
        try:
            if b is None:
                m = re.fullmatch(r"graph\s+([^\s(]+)\((.*)\):", s)
                if not m:
                    raise ValueError("expected 'graph NAME(%input: type, ...):'")
                b = GraphBuilder(m.group(1))
                for item in _split_top(m.group(2)):
                    name, t = _parse_binder(item)
                    env[name] = b.input(name, t.dtype, t.shape)
            elif outputs is not None:
                raise ValueError("text after 'return'")
            elif s.startswith(("param ", "buffer ")):
                kind, rest = s.split(None, 1)
                name, t = _parse_binder(rest)
                data = params.pop(name, None)
                if data is None:
                    shape = [d if isinstance(d, int) else 1 for d in t.shape]
                    check_alloc(shape, t.dtype.itemsize, f"line {no}: {kind} '{name}'")
                    data = np.zeros(shape, dtype=t.dtype.numpy)
                env[name] = b.param(name, data, trainable=kind == "param")
                if env[name].type != t:
                    raise ValueError(f"data for '{name}' is {env[name].type}, declared {t}")
            elif s.startswith("return"):
                outputs = [env[_ref_name(r) or ""] for r in _split_top(s[len("return"):])]
            elif s.endswith("{"):
                blocks, i = _split_bodies(lines, i - 1)
                bodies = {k: _parse_lines([(n, c[_indent(block[0][1]):], t) for n, c, t in block],
                                          {}) for k, block in blocks.items()}
                _parse_node(b, env, s[:-1].rstrip(), note, bodies)
            else:
                _parse_node(b, env, s, note)
        except (ParseError, ResourceError):
            raise
        except KeyError as e:
            raise ParseError(f"line {no}: undefined value %{e.args[0]}: {s}") from None
        except LbdlError as e:
            raise ParseError(f"line {no}: {e}") from None
        except _AtColumn as e:
            col = len(code) - len(code.lstrip()) + e.col + 1
            raise ParseError(f"line {no}, column {col}: {e}: {s}") from None
        except (ValueError, SyntaxError, TypeError, OverflowError) as e:
            raise ParseError(f"line {no}: {e}: {s}") from None
    if b is None or outputs is None:
        raise ParseError("graph text has no 'return' line")
    try:
        return b.build(outputs)
    except LbdlError as e:
        raise ParseError(f"parsed graph does not verify: {e}") from None


def _parse_node(b: Any, env: dict[str, Value], s: str, note: str,
                bodies: Mapping[str, Graph] | None = None) -> None:
    lhs, rhs = s.split(" = ", 1)
    binders = [_parse_binder(x) for x in _split_top(lhs)]
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", rhs)
    if not m:
        raise ValueError("expected an op name")
    op = OPS.get(m.group(1))
    if op is None:
        raise ValueError(f"unknown op '{m.group(1)}'")
    pos = m.end()
    attrs: dict[str, Any] = {}
    if rhs[pos:pos + 1] == "[":
        end = _match_bracket(rhs, pos)
        try:
            attrs = _parse_attrs(rhs[pos + 1:end - 1])
        except _AtColumn as e:  # column in the line: lhs, " = ", the op and "[" before it
            raise _AtColumn(str(e), len(lhs) + 3 + pos + 1 + e.col - 2) from None
        pos = end
    attrs.update(bodies or {})
    if rhs[pos:pos + 1] != "(" or _match_bracket(rhs, pos) != len(rhs):
        raise ValueError("expected '(inputs)' at the end of the line")
    args = [_ref_name(a) for a in _split_top(rhs[pos + 1:-1])]
    inputs = [env[a] if a is not None else None for a in args]
    name, source = None, None
    note, tags = _parse_tags(note)
    if note:
        parts = note.split("@", 1)
        name = parts[0].strip() or None
        if len(parts) == 2 and re.fullmatch(r"\s*\S+:\d+.*", parts[1]):
            file, rest = parts[1].strip().rsplit(":", 1)
            source = SourceLoc(file, int(rest.split()[0]), rest.split(" in ")[-1]
                               if " in " in rest else "")
    outs = b.add_node(op, inputs, attrs, name=name, source=source,
                      output_names=[n for n, _ in binders], scope=tags.get("scope"),
                      origin=tags.get("origin"))
    for (n, declared), v in zip(binders, outs, strict=True):
        if v.type != declared:
            raise ValueError(f"%{n} is declared {declared} but {op.name} gives {v.type}")
        env[n] = v
