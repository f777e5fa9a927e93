"""Provenance of exported nodes: embedded in the model, or kept beside it in a sidecar file.

An export records, per ONNX node, the IR node and op it came from and the user's source line
(``doc_string`` and ``lbdl.*`` metadata). A model meant for deployment can drop all of it
(:func:`strip_provenance`, ``save_onnx(..., provenance=False)``, ``export --strip-provenance``);
the map then goes into ``<model>.provenance.json`` next to the model, which the ONNX Runtime
runner reads to keep naming the user's code in its errors. The model itself carries nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from onnx import ModelProto

from lbdl_graph.errors import OnnxError

__all__ = ["SIDECAR_SUFFIX", "load_sidecar", "sidecar_path", "strip_provenance",
           "write_sidecar"]

SIDECAR_SUFFIX = ".provenance.json"
_FIELDS = ("node", "op", "source")


def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    """``dir/model.onnx`` -> ``dir/model.provenance.json``."""
    p = Path(model_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def strip_provenance(model: ModelProto) -> tuple[ModelProto, dict[str, dict[str, str]]]:
    """A copy of ``model`` with no node doc strings and no ``lbdl.*`` node metadata, and the
    map ``{onnx node name: {"node", "op", "source"}}`` they held."""
    out = ModelProto()
    out.CopyFrom(model)
    table: dict[str, dict[str, str]] = {}
    for n in out.graph.node:
        props = {p.key: p.value for p in n.metadata_props}
        entry = {k[len("lbdl."):]: v for k, v in props.items() if k.startswith("lbdl.")}
        if n.doc_string:
            entry["source"] = n.doc_string
        if entry:
            table[n.name] = entry
        n.doc_string = ""
        keep = [p for p in n.metadata_props if not p.key.startswith("lbdl.")]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    return out, table


def write_sidecar(model_path: str | os.PathLike[str], table: dict[str, dict[str, str]]) -> Path:
    """Write the provenance map next to the model (atomically); returns its path."""
    path = sidecar_path(model_path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps({"format": "lbdl-provenance/1", "nodes": table}, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OnnxError(f"cannot write provenance map {path}: {e.strerror or e}") from None
    return path


def load_sidecar(model_path: str | os.PathLike[str]) -> dict[str, dict[str, str]] | None:
    """The provenance map beside ``model_path`` (None when there is none)."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        doc: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OnnxError(f"provenance map {path} is not readable JSON: {e}") from None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, dict) or doc.get("format") != "lbdl-provenance/1" or not all(
            isinstance(v, dict) and all(isinstance(v.get(f, ""), str) for f in _FIELDS)
            for v in nodes.values()):
        raise OnnxError(f"provenance map {path} is not an lbdl-provenance/1 file "
                        "(expected {'format': ..., 'nodes': {name: {node, op, source}}})")
    return {str(k): {f: v[f] for f in _FIELDS if f in v} for k, v in nodes.items()}
