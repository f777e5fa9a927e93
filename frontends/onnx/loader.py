"""Reading ONNX files safely: model parsing, tensors, external data and attributes.

Every failure becomes an :class:`~lbdl_graph.errors.OnnxError` naming the file (and the tensor
or node); no protobuf traceback escapes. External data is read by this module, not by
``onnx.load``, so that a tensor cannot name a file outside the model's directory: locations
that are absolute, contain ``..`` or resolve (through symlinks) outside it are rejected.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, ModelProto, NodeProto, TensorProto, numpy_helper

from lbdl_graph.dtypes import DType, dtype
from lbdl_graph.errors import DTypeError, OnnxError

__all__ = [
    "ONNX_DTYPES",
    "Source",
    "UnsupportedDType",
    "load_model",
    "onnx_dtype",
    "parse_attributes",
    "tensor_to_numpy",
]

ONNX_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4",
    TensorProto.BOOL: "bool",
}


class UnsupportedDType(OnnxError):
    """An ONNX element type the IR has no dtype for (uint16, string, complex64, ...)."""


def _type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def onnx_dtype(elem_type: int, what: str) -> DType:
    """The IR dtype of an ONNX element type; raises UnsupportedDType naming ``what``."""
    name = ONNX_DTYPES.get(elem_type)
    if name is None:
        raise UnsupportedDType(f"{what}: unsupported element type {_type_name(elem_type)} "
                               f"(supported: {', '.join(ONNX_DTYPES.values())})")
    return dtype(name)


class Source:
    """Where a model came from: a display name for errors and the directory of external data."""

    def __init__(self, display: str, base_dir: Path | None) -> None:
        self.display = display
        self.base_dir = base_dir

    def error(self, message: str, **kw: Any) -> OnnxError:
        """An OnnxError whose message starts with the file name."""
        return OnnxError(f"{self.display}: {message}", **kw)


def _parse(data: bytes, display: str) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf DecodeError and friends
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OnnxError(f"{display}: not a valid ONNX model; the file is truncated or "
                        f"corrupted ({first})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise OnnxError(f"{display}: not a valid ONNX model (no graph or opset_import); the "
                        "file is truncated, corrupted or not an ONNX file")
    return model


def load_model(model: Any, base_dir: str | os.PathLike[str] | None = None
               ) -> tuple[ModelProto, Source]:
    """Parse a path, bytes or ModelProto (external data is *not* loaded here)."""
    if isinstance(model, ModelProto):
        base = Path(base_dir) if base_dir is not None else None
        return model, Source(model.graph.name or "<onnx model>", base)
    if isinstance(model, bytes | bytearray | memoryview):
        base = Path(base_dir) if base_dir is not None else None
        return _parse(bytes(model), "<onnx bytes>"), Source("<onnx bytes>", base)
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise OnnxError(f"{path}: cannot read ONNX file ({e.strerror or e})") from None
        base = Path(base_dir) if base_dir is not None else path.parent
        return _parse(data, str(path)), Source(str(path), base)
    raise OnnxError(f"import_onnx expects a path, bytes or onnx.ModelProto, got "
                    f"{type(model).__name__}")


def _external_path(src: Source, location: str, tensor: str) -> Path:
    """Resolve an external-data location, refusing anything outside the model directory."""
    if src.base_dir is None:
        raise src.error(f"tensor '{tensor}' stores its data in external file '{location}', but "
                        "the model directory is unknown (pass base_dir=...)")
    parts = location.replace("\\", "/").split("/")
    if (not location or os.path.isabs(location) or location.startswith(("/", "\\"))
            or (len(location) > 1 and location[1] == ":") or ".." in parts):
        raise src.error(f"tensor '{tensor}': external data location '{location}' is not a "
                        "plain relative path inside the model directory (rejected)")
    base = src.base_dir.resolve()
    target = (src.base_dir / location).resolve()
    if base != target and base not in target.parents:
        raise src.error(f"tensor '{tensor}': external data location '{location}' resolves to "
                        f"'{target}', outside the model directory '{base}' (rejected)")
    return target


def _read_external(t: TensorProto, src: Source) -> bytes:
    info: Mapping[str, str] = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    path = _external_path(src, location, t.name)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise src.error(f"tensor '{t.name}': invalid external data offset/length "
                        f"{dict(info)}") from None
    try:
        st = path.stat()
        size = st.st_size
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise src.error(f"tensor '{t.name}': external data '{location}' is not a regular "
                            "file (FIFOs, devices and directories are refused)")
        if offset < 0 or (length is not None and (length < 0 or offset + length > size)):
            raise src.error(f"tensor '{t.name}': external data file '{location}' is truncated "
                            f"or the range is invalid (offset {offset}, length {length}, file "
                            f"has {size} bytes)")
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(length if length is not None else -1)
    except OSError as e:
        raise src.error(f"tensor '{t.name}': cannot read external data file '{location}' "
                        f"({e.strerror or e})") from None
    if length is not None and len(data) != length:
        raise src.error(f"tensor '{t.name}': external data file '{location}' is truncated "
                        f"(needs {offset + length} bytes, has {size})")
    return data


def tensor_to_numpy(t: TensorProto, src: Source, what: str = "") -> np.ndarray:
    """Convert a TensorProto (inline or external data) to a NumPy array, checking its size."""
    label = what or f"tensor '{t.name}'"
    if t.data_type == TensorProto.STRING:
        raise UnsupportedDType(f"{src.display}: {label}: string tensors are not supported")
    if t.data_location == TensorProto.EXTERNAL:
        inline = TensorProto()
        inline.CopyFrom(t)
        del inline.external_data[:]
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = _read_external(t, src)
        t = inline
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise src.error(f"{label}: negative dims {dims}")
    if t.HasField("raw_data"):
        np_dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type) if t.data_type else None
        if np_dt is not None:
            n = int(np.prod(dims, dtype=np.int64))
            bits = 4 if t.data_type in (TensorProto.INT4, TensorProto.UINT4) else (
                np.dtype(np_dt).itemsize * 8)
            expected = (n * bits + 7) // 8
            if len(t.raw_data) != expected:
                raise src.error(f"{label}: has {len(t.raw_data)} bytes of data, its shape "
                                f"{dims} needs {expected} (truncated or corrupted)")
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise src.error(f"{label}: cannot decode tensor data ({first})") from None
    if arr.shape != tuple(dims):
        raise src.error(f"{label}: data has {arr.size} elements, shape {dims} needs "
                        f"{int(np.prod(dims))} (truncated or corrupted)")
    return arr


def parse_attributes(node: NodeProto, src: Source) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded, tensors as NumPy arrays)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        where = f"attribute '{a.name}' of node '{node.name or node.op_type}'"
        if a.ref_attr_name:
            raise src.error(f"{where} refers to a function attribute; only graphs are supported")
        if a.type == AttributeProto.INT:
            out[a.name] = int(a.i)
        elif a.type == AttributeProto.FLOAT:
            out[a.name] = float(a.f)
        elif a.type == AttributeProto.STRING:
            out[a.name] = a.s.decode("utf-8", errors="replace")
        elif a.type == AttributeProto.INTS:
            out[a.name] = [int(v) for v in a.ints]
        elif a.type == AttributeProto.FLOATS:
            out[a.name] = [float(v) for v in a.floats]
        elif a.type == AttributeProto.STRINGS:
            out[a.name] = [s.decode("utf-8", errors="replace") for s in a.strings]
        elif a.type == AttributeProto.TENSOR:
            out[a.name] = tensor_to_numpy(a.t, src, where)
        elif a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            out[a.name] = a.g if a.type == AttributeProto.GRAPH else list(a.graphs)
        elif a.type == AttributeProto.SPARSE_TENSOR:
            out[a.name] = a.sparse_tensor
        elif a.type == AttributeProto.TYPE_PROTO:
            out[a.name] = a.tp
        else:
            raise src.error(f"{where} has unknown type {a.type}")
    return out


def numpy_dtype_of(arr: np.ndarray, what: str) -> DType:
    """The IR dtype of an array, or UnsupportedDType naming ``what``."""
    try:
        return dtype(arr.dtype)
    except DTypeError:
        raise UnsupportedDType(f"{what}: element type {arr.dtype} is not supported") from None
