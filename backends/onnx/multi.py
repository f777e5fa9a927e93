"""Several ONNX models saved together with their weights stored once (a prefill/decode pair)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from onnx import ModelProto, TensorProto, external_data_helper

from lbdl_graph.errors import OnnxError

__all__ = ["save_onnx_models"]

_PROTO_LIMIT = 2**31 - 1


def save_onnx_models(models: Mapping[str, ModelProto], directory: str | os.PathLike[str], *,
                     data: str = "weights.data", threshold: int = 1024) -> dict[str, Path]:
    """Write several models (``{"prefill.onnx": m1, "decode.onnx": m2}``) into ``directory``
    with their tensors above ``threshold`` bytes in ONE external file ``data``, stored once
    when models share an initializer (same name, same bytes): a prefill/decode pair costs one
    copy of the weights on disk. Files go through a temporary directory, models last."""
    out = Path(directory)
    if not out.is_dir():
        raise OnnxError(f"cannot save ONNX models into {out}: not a directory")
    tmp = tempfile.mkdtemp(prefix=".onnx-set.", dir=out)
    try:
        stored: dict[tuple[str, bytes], tuple[int, int]] = {}  # (name, digest) -> where
        offset = 0
        with open(os.path.join(tmp, data), "wb") as f:
            copies: dict[str, ModelProto] = {}
            for fname, model in models.items():
                m = ModelProto()
                m.CopyFrom(model)
                for t in m.graph.initializer:
                    raw = t.raw_data
                    if t.data_location == TensorProto.EXTERNAL or len(raw) < threshold:
                        continue
                    key = (t.name, hashlib.blake2b(raw, digest_size=32).digest())
                    hit = stored.get(key)
                    if hit is None:
                        pad = (-offset) % 64  # aligned for memory mapping
                        f.write(b"\0" * pad)
                        offset += pad
                        f.write(raw)
                        hit = stored[key] = (offset, len(raw))
                        offset += len(raw)
                    external_data_helper.set_external_data(t, data, hit[0], hit[1])
                    t.data_location = TensorProto.EXTERNAL
                    t.ClearField("raw_data")
                copies[fname] = m
            f.flush()
            os.fsync(f.fileno())
        for fname, m in copies.items():
            if m.ByteSize() > _PROTO_LIMIT:
                raise OnnxError(f"model {fname} is over 2 GB even with external weights")
            with open(os.path.join(tmp, fname), "wb") as f:
                f.write(m.SerializeToString())
        os.replace(os.path.join(tmp, data), out / data)
        for fname in copies:
            os.replace(os.path.join(tmp, fname), out / fname)
    except OSError as e:
        raise OnnxError(f"cannot save ONNX models into {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {fname: out / fname for fname in models}
