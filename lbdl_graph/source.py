"""Source locations: which line of the user's code created a node.

A location prints without revealing the machine's directory layout, so exported models and
pictures can be shared: a frame inside the package reads ``lbdl_graph/frontends/zoo/gpt.py:106``,
a user frame reads relative to its project root (the nearest folder above it holding
``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git``), or by file name when it has none.
``SourceLoc.file`` keeps the full path for tools running on the same machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["SourceLoc", "caller_location", "display_path", "source_override"]


@dataclass(frozen=True, slots=True)
class SourceLoc:
    """A file, line and function in user code (and the frame's module, when known)."""

    file: str
    line: int
    func: str = ""
    module: str = field(default="", compare=False)

    def relative(self, start: str | None = None) -> SourceLoc:
        """The same location with the file path relative to ``start`` (default: cwd)."""
        try:
            rel = os.path.relpath(self.file, start or os.getcwd())
        except ValueError:  # another drive on Windows
            rel = self.file
        return SourceLoc(rel, self.line, self.func, self.module)

    @property
    def display_file(self) -> str:
        """The file as it is shown: package-relative, project-relative or its bare name."""
        return display_path(self.file, self.module)

    def __str__(self) -> str:
        return f"{self.display_file}:{self.line}" + (f" in {self.func}" if self.func else "")


_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


@functools.lru_cache(maxsize=1024)
def _project_root(directory: str) -> str | None:
    """The nearest folder at or above ``directory`` holding a project marker."""
    d = directory
    while True:
        if any(os.path.exists(os.path.join(d, m)) for m in _MARKERS):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def display_path(file: str, module: str = "") -> str:
    """``file`` without the machine's directory layout (see the module docstring)."""
    if module == "lbdl_graph" or module.startswith("lbdl_graph."):
        stem = module.replace(".", "/")
        return f"{stem}/__init__.py" if os.path.basename(file) == "__init__.py" else f"{stem}.py"
    if not os.path.isabs(file):  # already a shown form (read back from a file)
        return file
    root = _project_root(os.path.dirname(file))
    if root is None:
        return os.path.basename(file)
    return os.path.relpath(file, root).replace(os.sep, "/")


_override: ContextVar[SourceLoc | None] = ContextVar("lbdl_source_override", default=None)


@contextlib.contextmanager
def source_override(loc: SourceLoc | None) -> Iterator[None]:
    """Attribute every node created inside the block to ``loc`` (used by passes and autodiff)."""
    token = _override.set(loc)
    try:
        yield
    finally:
        _override.reset(token)


def caller_location() -> SourceLoc | None:
    """The innermost stack frame of user code: outside the lbdl_graph package, or in one of its
    modules that models are written in (layers, zoo), which set ``__lbdl_user_code__ = True``."""
    loc = _override.get()
    if loc is not None:
        return loc
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        internal = module == "lbdl_graph" or module.startswith("lbdl_graph.")
        if not internal or frame.f_globals.get("__lbdl_user_code__"):
            code = frame.f_code
            return SourceLoc(code.co_filename, frame.f_lineno, code.co_name, module)
        frame = frame.f_back  # type: ignore[assignment]
    return None
