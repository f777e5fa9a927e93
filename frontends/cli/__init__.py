"""The ``lbdl-graph`` command line: one sub-command per verb.

Exit codes: 0 success, 1 the command failed (a typed error, printed without a traceback),
2 usage errors (unknown verb or option, bad arguments).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from lbdl_graph import __version__
from lbdl_graph.errors import LbdlError

__all__ = ["main"]

# Each verb module defines `register(subparsers) -> None`, adding one or more parsers whose
# `func` default takes the parsed namespace and returns an exit code (`inspect_cmd` adds
# `inspect`, `optimize` and `viz`).
VERB_MODULES = ("ops", "train", "run", "export", "inspect", "explore", "quantize", "merge",
                "generate", "check")


class UsageError(Exception):
    """Bad arguments found after parsing (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb registered."""
    parser = argparse.ArgumentParser(
        prog="lbdl-graph",
        description="A deep-learning graph compiler: DSL -> IR -> passes -> NumPy / ONNX Runtime.",
    )
    parser.add_argument("--version", action="version", version=f"lbdl-graph {__version__}")
    parser.add_argument("--max-alloc-bytes", metavar="BYTES", default=None,
                        help="refuse any tensor larger than this (e.g. 8G; default "
                             "$LBDL_MAX_ALLOC_BYTES or 16G)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        module = importlib.import_module(f"lbdl_graph.frontends.cli.{name}_cmd")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if getattr(args, "max_alloc_bytes", None) is not None:
            from lbdl_graph.limits import set_max_alloc_bytes

            set_max_alloc_bytes(args.max_alloc_bytes)
        return func(args)
    except UsageError as e:
        parser.error(str(e))  # exits with 2
        return 2
    except LbdlError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a file the command could not read or write
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
