"""The module scope and origin of an imported ONNX node (``Node.scope``, ``Node.origin``).

The scope comes from, in order:

1. the node's ``metadata_props`` key ``lbdl.scope`` (written by our own export, which also writes
   ``lbdl.origin``; a node we exported without ``lbdl.scope`` was at top level);
2. ``pkg.torch.onnx.name_scopes``, which torch's dynamo exporter writes as the repr of a list of
   module paths followed by the FX node's own name: ``"['', 'h.0', 'h.0.attn', 'linear_3']"``
   is in ``h.0.attn``;
3. the node name torch's TorchScript exporter writes: ``/encoder/layer.0/attention/self/MatMul``
   is in ``encoder.layer.0.attention.self``.

Anything else is at top level (``""``).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

from onnx import NodeProto

__all__ = [
    "ORIGIN_KEY",
    "SCOPE_KEY",
    "TORCH_SCOPES_KEY",
    "node_origin",
    "node_scope",
    "scope_from_name_scopes",
    "scope_from_node_name",
]

SCOPE_KEY = "lbdl.scope"
ORIGIN_KEY = "lbdl.origin"
NODE_KEY = "lbdl.node"  # every node of our own export has it
TORCH_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
MAX_LEN = 1024  # longer metadata is not a module path


def _clean(text: str) -> str:
    """The text with control characters and whitespace replaced (scopes print on one line)."""
    return "".join(c if c.isprintable() and not c.isspace() else "_" for c in text[:MAX_LEN])


def _as_list(text: str) -> list[Any] | None:
    for parse in (json.loads, ast.literal_eval):  # literal_eval evaluates literals only
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return value if isinstance(value, list) else None
    return None


def scope_from_name_scopes(text: str) -> str | None:
    """The innermost module path of a ``pkg.torch.onnx.name_scopes`` value (a list written as
    JSON or as a Python repr whose last entry is the node itself); None if it is no such list.
    """
    if len(text) > 64 * MAX_LEN:
        return None
    entries = _as_list(text)
    if entries is None or not all(isinstance(e, str) for e in entries):
        return None
    modules = [e for e in entries[:-1] if e]
    return _clean(modules[-1]) if modules else ""


def scope_from_node_name(name: str) -> str:
    """The scope in a TorchScript-exporter node name: its ``/``-separated parts but the last,
    joined with dots (``/encoder/layer.0/MatMul`` -> ``encoder.layer.0``); other names: ``""``.
    """
    if not name.startswith("/"):
        return ""
    return _clean(".".join(p for p in name[1:].split("/")[:-1] if p))


def _text(value: str | bytes) -> str:
    """A metadata string; protobuf hands back bytes when a corrupt file's value is not UTF-8."""
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _props(proto: NodeProto) -> Mapping[str, str]:
    return {_text(p.key): _text(p.value) for p in proto.metadata_props}


def node_scope(proto: NodeProto) -> str:
    """The scope of an ONNX node (see the module docstring for the sources, in order)."""
    props = _props(proto)
    if SCOPE_KEY in props:
        return _clean(props[SCOPE_KEY])
    if NODE_KEY in props:
        return ""
    if TORCH_SCOPES_KEY in props:
        scope = scope_from_name_scopes(props[TORCH_SCOPES_KEY])
        if scope is not None:
            return scope
    return scope_from_node_name(proto.name)


def node_origin(proto: NodeProto) -> str:
    """The pass that made the node, as our export recorded it (``""`` otherwise)."""
    return _clean(_props(proto).get(ORIGIN_KEY, ""))
