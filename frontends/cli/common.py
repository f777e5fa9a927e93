"""Helpers shared by the CLI verbs: model loading, option parsing and atomic file output.

Every output is written to a temporary file in the target's directory and renamed over it, so a
failed command never leaves a half-written file behind. Errors are typed: :class:`CliError` for
files that cannot be read or written, ``UsageError`` (exit code 2) for bad option values.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph.errors import LbdlError
from lbdl_graph.filemode import chmod_like_open
from lbdl_graph.graph import Graph
from lbdl_graph.limits import check_alloc

from . import UsageError

__all__ = [
    "CliError",
    "UsageError",
    "atomic_write",
    "check_output",
    "family_of",
    "level_arg",
    "load_arrays",
    "load_graph",
    "numpy_eval",
    "optimize",
    "parse_bind",
    "random_feeds",
    "resolve_zoo",
    "save_npz",
]


class CliError(LbdlError):
    """A command failed on its files: unreadable input, unwritable output, bad array data."""


# ---------------------------------------------------------------- files


def check_output(path: str | os.PathLike[str], *, mkdir: bool = False) -> Path:
    """Fail early (before any work) if ``path`` cannot be written; ``mkdir`` creates a
    directory ``path`` instead of checking a file's parent."""
    p = Path(path)
    target = p if mkdir else p.parent
    if mkdir:
        if p.exists() and not p.is_dir():
            raise CliError(f"cannot write into {p}: it is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create output directory {p}: {e.strerror or e}") from None
    elif p.is_dir():
        raise CliError(f"cannot write {p}: it is a directory")
    elif not target.is_dir():
        raise CliError(f"cannot write {p}: directory {target} does not exist")
    if not os.access(target, os.W_OK | os.X_OK):
        raise CliError(f"cannot write into {target}: permission denied")
    return p


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        chmod_like_open(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        tmp = None
    except OSError as e:
        raise CliError(f"cannot write {p}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return p


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write named arrays as an uncompressed ``.npz`` atomically."""
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buf, **named)
    return atomic_write(path, buf.getvalue())


def _check_npy_header(f: Any, what: str) -> None:
    """Read a .npy header and refuse arrays over the allocation limit before loading them."""
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dt = read(f)
    check_alloc(shape, dt.itemsize, what)


def _check_array_sizes(path: Path) -> None:
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    if member.endswith(".npy"):
                        with z.open(member) as f:
                            _check_npy_header(f, f"{path}: array '{member[:-4]}'")
        else:
            with path.open("rb") as f:
                _check_npy_header(f, f"{path}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return  # np.load below reports unreadable files in its own words


def _load_array_file(path: Path) -> Any:
    if path.is_file():
        _check_array_sizes(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"cannot read {path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise CliError(f"cannot read {path}: not a valid .npy/.npz file ({e})") from None


def load_arrays(files: Sequence[str] = (), npz: str | None = None) -> dict[str, np.ndarray]:
    """Arrays from ``name=file.npy`` items and an optional ``.npz`` (items win)."""
    out: dict[str, np.ndarray] = {}
    if npz is not None:
        data = _load_array_file(Path(npz))
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CliError(f"{npz} is a single array, not an .npz archive of named arrays")
        with data:
            try:
                out.update({k: np.asarray(data[k]) for k in data.files})
            except (OSError, ValueError, EOFError) as e:
                raise CliError(f"cannot read {npz}: corrupted archive ({e})") from None
    for item in files:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--input expects NAME=FILE.npy, got {item!r}")
        arr = _load_array_file(Path(file))
        if not isinstance(arr, np.ndarray):
            raise CliError(f"{file} is an .npz archive; pass it with --inputs")
        out[name] = arr
    return out


# ---------------------------------------------------------------- options


def level_arg(p: Any, default: str) -> None:
    """Add ``--level`` (a level or comma-separated pass names)."""
    p.add_argument("--level", default=default,
                   help=f"O0..O3 or comma-separated pass names (default {default})")


def parse_bind(items: Sequence[str] | None) -> dict[str, int]:
    """``["N=4", "T=8,S=6"]`` -> ``{"N": 4, "T": 8, "S": 6}``; bad syntax is a usage error."""
    dims: dict[str, int] = {}
    for item in items or ():
        for part in item.split(","):
            name, sep, size = part.strip().partition("=")
            name = name.strip()
            if not sep or not name.isidentifier():
                raise UsageError(f"--bind expects NAME=SIZE (e.g. N=4), got {part!r}")
            try:
                value = int(size)
            except ValueError:
                raise UsageError(f"--bind {name}: size {size!r} is not an integer") from None
            if value < 1:
                raise UsageError(f"--bind {name}: size must be >= 1, got {value}")
            dims[name] = value
    return dims


def random_feeds(specs: Sequence[tuple[str, Any, tuple[Any, ...]]], dims: Mapping[str, int],
                 seed: int = 0, given: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
    """Random arrays for the ``(name, dtype, shape)`` specs not in ``given``; symbolic or
    unknown dims take ``dims`` or 1. Floats are standard normal, integers in [0, 2)."""
    rng = np.random.default_rng(seed)
    feeds = dict(given or {})
    for name, dt, shape in specs:
        if name in feeds:
            continue
        concrete = [d if isinstance(d, int) else int(dims.get(str(d), 1)) for d in shape]
        npdt = np.dtype(dt.numpy)
        check_alloc(concrete, max(npdt.itemsize, 8), f"input '{name}' (with --bind {dict(dims)})")
        if npdt.kind == "f":
            feeds[name] = rng.standard_normal(concrete).astype(npdt)
        elif npdt.kind == "b":
            feeds[name] = rng.random(concrete) < 0.5
        else:
            feeds[name] = rng.integers(0, 2, concrete).astype(npdt)
    return feeds


# ---------------------------------------------------------------- models


def family_of(entry: Any) -> str:
    """The zoo family (module name) of an entry: ``resnet`` for ``resnet_tiny``."""
    return str(type(entry.config).__module__).rsplit(".", 1)[-1]


def resolve_zoo(name: str, config: str | None = None) -> Any:
    """The zoo entry for an entry name or a family name; ``config='tiny'`` picks the family's
    test-size entry. Unknown names are a usage error listing the known ones."""
    from lbdl_graph.frontends.zoo import ZOO

    entry = ZOO.get(name)
    family = family_of(entry) if entry is not None else name
    members = [e for e in ZOO.values() if family_of(e) == family]
    if not members:
        raise UsageError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}")
    if config == "tiny" and (entry is None or not entry.tiny):
        tiny = [e for e in members if e.tiny]
        if not tiny:
            raise UsageError(f"zoo family {family!r} has no tiny configuration")
        return tiny[0]
    return entry if entry is not None else members[0]


def is_onnx_path(spec: str) -> bool:
    """True if the model argument names an ONNX file rather than a zoo model."""
    return spec.endswith(".onnx") or os.sep in spec or Path(spec).is_file()


def load_graph(spec: str, *, config: str | None = None) -> Graph:
    """A zoo model (traced in evaluation mode) or an ``.onnx`` file (imported)."""
    if is_onnx_path(spec):
        from lbdl_graph.frontends.onnx import import_onnx

        if not Path(spec).is_file():
            raise CliError(f"cannot read ONNX model {spec}: no such file")
        return import_onnx(spec)
    return resolve_zoo(spec, config).trace()


def numpy_eval(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` once on the NumPy interpreter in evaluation mode."""
    from lbdl_graph.backends.numpy import run

    return dict(run(graph, feeds, training=False))


def optimize(graph: Graph, level: str, *, check: bool = False, inference: bool = False
             ) -> tuple[Graph, Any, dict[str, str]]:
    """Run ``level`` (O0-O3 or comma-separated pass names) one pass at a time; returns the
    optimised graph, the :class:`PipelineReport` and which pass made each new node.

    ``inference`` (the graph is run, drawn or exported for inference) runs ``fold_params``
    first at every level, O0 included, so no parameter is transposed or reshaped at run time.
    """
    from lbdl_graph.passes.manager import PassReport, PipelineReport, resolve_passes, run_passes

    names = [p.strip() for p in level.split(",") if p.strip()] if "," in level else level
    steps = resolve_passes(names, inference=inference)
    executor: Callable[..., Any] | bool = numpy_eval if check else False
    reports: list[PassReport] = []
    rules: dict[str, str] = {}
    g = graph
    for name, p in steps:
        before = set(g.node_map)
        res = run_passes(g, [p], verify=True, check_translation=executor)
        reports.extend(type(r)(name, r.seconds, r.changed, r.stats, r.ops_before, r.ops_after)
                       for r in res.report.passes)
        rules.update({n: name for n in res.graph.node_map if n not in before})
        g = res.graph
    return g, PipelineReport(graph.name, tuple(reports)), rules
