"""Typed errors. Every error the project raises derives from :class:`LbdlError`.

An error carries where it happened: the graph node (name and op), the user's source line that
created the node, and the offending shapes or dtypes in its message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .source import SourceLoc

__all__ = [
    "AutodiffError",
    "CheckpointError",
    "DTypeError",
    "DistributedError",
    "ExecutionError",
    "GenerationError",
    "GraphError",
    "InputError",
    "LbdlError",
    "NumericError",
    "OnnxError",
    "OpError",
    "ParseError",
    "ResourceError",
    "ShapeError",
]


class LbdlError(Exception):
    """Base class of every lbdl-graph error; names the node, op and user source line if known."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        op: str | None = None,
        source: SourceLoc | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.op = op
        self.source = source
        self.hint = hint

    def with_context(
        self, *, node: str | None = None, op: str | None = None, source: SourceLoc | None = None
    ) -> LbdlError:
        """Fill in missing location details (keeps what is already known) and return self."""
        self.node = self.node or node
        self.op = self.op or op
        self.source = self.source or source
        return self

    def __str__(self) -> str:
        parts = [self.message]
        if self.node is not None or self.op is not None:
            where = f"node '{self.node}'" if self.node else "node"
            parts.append(f"  at {where}" + (f" (op {self.op})" if self.op else ""))
        if self.source is not None:
            parts.append(f"  defined at {self.source}")
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.node, self.op, self.source, self.hint))


def _rebuild(cls: type[LbdlError], message: str, node: Any, op: Any, source: Any, hint: Any) -> Any:
    return cls(message, node=node, op=op, source=source, hint=hint)


class GraphError(LbdlError):
    """A malformed graph: cycles, undefined or doubly defined values, missing outputs."""


class ShapeError(LbdlError):
    """Shapes that do not fit an op's rule (the message shows them)."""


class DTypeError(LbdlError):
    """Dtypes that do not fit an op's rule."""


class OpError(LbdlError):
    """An unknown op, an unknown or ill-typed attribute, or a missing rule for an op."""


class ParseError(LbdlError):
    """Text that is not a valid printed graph; names the line and column."""


class InputError(LbdlError):
    """Run-time inputs that do not match the graph's declared inputs."""


class GenerationError(InputError):
    """Bad generation input: a prompt longer than the context, token ids outside the
    vocabulary, sampling parameters out of range, an unreadable tokenizer or export."""


class ExecutionError(LbdlError):
    """A kernel failed while running a graph."""


class NumericError(ExecutionError):
    """NaN or Inf appeared; names the first node that produced it."""


class AutodiffError(LbdlError):
    """A gradient that cannot be built (non-scalar loss, unrelated wrt, op without a VJP)."""


class OnnxError(LbdlError):
    """ONNX export, import or ONNX Runtime failures, mapped back to the IR node if possible."""


class CheckpointError(LbdlError):
    """A checkpoint that is missing, truncated, corrupted or does not fit the model."""


class ResourceError(LbdlError):
    """A tensor that would need more memory than the allocation limit (names the bytes)."""

    def __init__(self, message: str, *, nbytes: int = 0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.nbytes = nbytes


class DistributedError(LbdlError):
    """A data-parallel run that cannot go on: ranks that disagree (model, config, state), a rank
    that failed or did not reach a collective in time. ``ranks`` names the ranks at fault;
    ``collective`` is True when every rank raises the same error (no abort needed)."""

    def __init__(self, message: str, *, ranks: tuple[int, ...] = (), collective: bool = False,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.ranks = tuple(ranks)
        self.collective = collective
