"""Source locations: which line of the user's code created a node."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["SourceLoc", "caller_location", "source_override"]


@dataclass(frozen=True, slots=True)
class SourceLoc:
    """A file, line and function in user code."""

    file: str
    line: int
    func: str = ""

    def relative(self, start: str | None = None) -> SourceLoc:
        """The same location with the file path relative to ``start`` (default: cwd)."""
        try:
            rel = os.path.relpath(self.file, start or os.getcwd())
        except ValueError:  # another drive on Windows
            rel = self.file
        return SourceLoc(rel, self.line, self.func)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" + (f" in {self.func}" if self.func else "")


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
            return SourceLoc(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back  # type: ignore[assignment]
    return None
