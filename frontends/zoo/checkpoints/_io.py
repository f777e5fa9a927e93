"""Reading checkpoints and applying a family's mapping table (no pickle, no network).

A checkpoint is read with ``safetensors`` only: a Hugging Face directory (``config.json`` and
``model.safetensors``, or the shards listed in ``model.safetensors.index.json``, as
``save_pretrained`` writes them) or a single ``.safetensors`` file (a torchvision state dict).

A mapping table is a list of :class:`Rule`: one zoo parameter, the checkpoint tensors it is
made from and how (``copy``, ``T`` for the transposed Conv1D layout, ``cat`` for fused q/k/v).
``{i}`` in a rule stands for the layer index. :func:`convert` applies a table and checks that
every zoo tensor is made, every checkpoint tensor is used (``strict``) and every shape fits,
with errors that name the file and the tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.errors import CheckpointError

from ...module import Module

__all__ = ["Checkpoint", "Rule", "convert", "load_into", "read_file", "read_hf_dir"]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


@dataclass
class Checkpoint:
    """Tensors by name, the file each came from, and the config (``{}`` without one)."""

    tensors: dict[str, np.ndarray]
    files: dict[str, str]
    config: dict[str, Any]
    where: str  # the directory or file, for messages

    def file_of(self, name: str) -> str:
        """The file that holds tensor ``name``."""
        return self.files.get(name, self.where)


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError("reading checkpoints needs the 'safetensors' package") from None
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot read {path} as safetensors: {e}") from None


def read_file(path: str | os.PathLike[str]) -> Checkpoint:
    """A single ``.safetensors`` file (a state dict written with ``safetensors``)."""
    p = Path(path)
    tensors = _load_safetensors(p)
    return Checkpoint(tensors, dict.fromkeys(tensors, str(p)), {}, str(p))


def read_hf_dir(path: str | os.PathLike[str]) -> Checkpoint:
    """A ``save_pretrained`` directory: ``config.json`` and the safetensors weights."""
    d = Path(path)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist (expected a directory "
                              f"with {CONFIG} and {WEIGHTS}, as save_pretrained writes them)")
    cfg_path = d / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"checkpoint directory {d} has no {CONFIG}")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {cfg_path}: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path} is not a JSON object")
    if (d / WEIGHTS).is_file():
        shards = [WEIGHTS]
    elif (d / INDEX).is_file():
        try:
            weight_map = json.loads((d / INDEX).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"cannot read the shard index {d / INDEX}: {e}") from None
        shards = sorted(set(weight_map.values()))
    else:
        found = sorted(p.name for p in d.iterdir())
        raise CheckpointError(f"checkpoint directory {d} has no {WEIGHTS} (nor {INDEX}); it "
                              f"holds {found}", hint="pickled pytorch_model.bin files are not "
                              "read; re-save with save_pretrained(safe_serialization=True)")
    tensors: dict[str, np.ndarray] = {}
    files: dict[str, str] = {}
    for shard in shards:
        part = _load_safetensors(d / shard)
        tensors.update(part)
        files.update(dict.fromkeys(part, str(d / shard)))
    return Checkpoint(tensors, files, config, str(d))


def expect_config(ck: Checkpoint, model_types: Sequence[str], family: str) -> None:
    """Refuse a config.json of another architecture."""
    mt = ck.config.get("model_type")
    if mt not in model_types:
        archs = ck.config.get("architectures")
        raise CheckpointError(f"{ck.where}/{CONFIG}: model_type {mt!r} (architectures {archs}) "
                              f"is not a {family} checkpoint; {family} reads model_type "
                              f"{' or '.join(map(repr, model_types))}")


def config_value(ck: Checkpoint, key: str, default: Any = None) -> Any:
    """``config[key]``; a missing key without a default names the file."""
    if key in ck.config:
        return ck.config[key]
    if default is None:
        raise CheckpointError(f"{ck.where}/{CONFIG} has no '{key}'")
    return default


def copy(xs: list[np.ndarray]) -> np.ndarray:
    """The tensor as it is."""
    return xs[0]


def transpose(xs: list[np.ndarray]) -> np.ndarray:
    """The Conv1D layout (in, out) -> Linear's (out, in)."""
    return np.ascontiguousarray(xs[0].T)


def cat(xs: list[np.ndarray]) -> np.ndarray:
    """Separate q, k, v projections -> the fused in_proj (stacked along axis 0)."""
    return np.concatenate(xs, axis=0)


def _widen(a: np.ndarray) -> np.ndarray:
    """bfloat16 / float8 tensors (ml_dtypes, NumPy kind 'V') -> float32, exactly."""
    return a.astype(np.float32) if a.dtype.kind == "V" and "float" in a.dtype.name else a


@dataclass(frozen=True)
class Rule:
    """Zoo tensor ``ours`` = ``how(theirs...)``; ``{i}`` is the layer index."""

    ours: str
    theirs: tuple[str, ...]
    how: Callable[[list[np.ndarray]], np.ndarray] = copy


def rule(ours: str, *theirs: str, how: Callable[[list[np.ndarray]], np.ndarray] = copy
         ) -> Rule:
    """A :class:`Rule`; ``theirs`` defaults to ``ours``."""
    return Rule(ours, theirs or (ours,), how)


def strip_prefix(ck: Checkpoint, prefixes: Sequence[str], probe: str) -> None:
    """Drop the first of ``prefixes`` under which ``probe`` exists (``transformer.``, ...)."""
    for p in prefixes:
        if p + probe in ck.tensors:
            if p:
                ck.tensors = {k[len(p):] if k.startswith(p) else k: v
                              for k, v in ck.tensors.items()}
                ck.files = {k[len(p):] if k.startswith(p) else k: v for k, v in ck.files.items()}
            return
    raise CheckpointError(f"{ck.where}: no tensor {probe!r} (under any of the prefixes "
                          f"{list(prefixes)}); this does not look like the expected "
                          f"architecture (tensors: {sorted(ck.tensors)[:6]}...)")


def convert(ck: Checkpoint, table: Sequence[Rule], layers: int, model: Module, *,
            strict: bool = True, ignore: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Apply ``table`` (``{i}`` expanded for ``layers`` layers) to the checkpoint and check
    the result against ``model``'s state dict; ``ignore`` lists checkpoint tensor suffixes
    that are skipped (non-persistent buffers some versions save)."""
    want = model.state_dict()
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for r in table:
        for i in range(layers) if any("{i}" in s for s in (r.ours, *r.theirs)) else [None]:
            ours = r.ours.format(i=i)
            theirs = [t.format(i=i) for t in r.theirs]
            absent = [t for t in theirs if t not in ck.tensors]
            if absent:
                missing += absent
                continue
            arr = _widen(r.how([ck.tensors[t] for t in theirs]))
            used.update(theirs)
            if ours not in want:
                raise CheckpointError(f"mapping table error: {ours} is not a parameter of "
                                      f"{type(model).__name__}")
            if arr.shape != want[ours].shape:
                src = ", ".join(f"'{t}' {list(ck.tensors[t].shape)}" for t in theirs)
                raise CheckpointError(f"{ck.file_of(theirs[0])}: tensor {src} gives "
                                      f"{list(arr.shape)} for {ours}, which the config needs "
                                      f"as {list(want[ours].shape)}")
            out[ours] = arr
    if missing:
        raise CheckpointError(f"{ck.where}: missing tensor(s) {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all)")
    extra = sorted(k for k in set(ck.tensors) - used if not k.endswith(tuple(ignore)))
    if strict and extra:
        raise CheckpointError(f"{ck.where}: tensor(s) {extra[:8]} ({len(extra)} in all) have "
                              f"no place in {type(model).__name__}", hint="pass strict=False "
                              "to skip them (a task head this model does not have)")
    return out


def load_into(model: Module, state: Mapping[str, np.ndarray], where: str) -> Module:
    """Hand the converted tensors (every parameter and buffer must be there; a tied one under
    any of its names) to ``model``'s leaves, cast to their dtypes. Shapes were checked by
    :func:`convert`; contiguous arrays of the right dtype are taken without a copy."""
    leaves = model._state_leaves()
    done = {id(leaves[k]) for k in state if k in leaves}
    absent = [k for k, leaf in leaves.items() if id(leaf) not in done]
    if absent:
        raise CheckpointError(f"{where}: the mapping leaves {absent[:8]} of "
                              f"{type(model).__name__} unset")
    for k, arr in state.items():
        leaf = leaves[k]
        want = leaf.dtype.numpy
        if arr.dtype.kind not in "fiub" or not np.can_cast(arr.dtype, want, "same_kind"):
            raise CheckpointError(f"{where}: tensor for {k} is {arr.dtype}; the model needs "
                                  f"{np.dtype(want)}")
        data = np.ascontiguousarray(arr, dtype=want)
        leaf.data = data if data.flags.writeable else data.copy()
    return model
