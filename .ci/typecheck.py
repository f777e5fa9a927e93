#!/usr/bin/env python3
"""Type-check the project with mypy under its installed module names.

setup.py maps frontends/, passes/ and backends/ to lbdl_graph.frontends, .passes and .backends.
Plain ``mypy frontends`` would name those modules ``frontends.*`` and fail every absolute import
of ``lbdl_graph.frontends.*``, so this script hands mypy each file with the module name it has
once installed (read from setup.py's ROOTS). Settings come from [tool.mypy] in pyproject.toml.

Usage: python .ci/typecheck.py [mypy options]   (exit status 0 clean, 1 errors, 2 blocking errors)

Needs mypy 2 (pinned in the dev extra): mypy 1.x looks submodules up on disk, so ``from . import
_tensor_ops`` inside the mapped lbdl_graph.frontends fails there.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def package_roots() -> dict[str, str]:
    """setup.py's ROOTS: installed package name -> folder in this clone."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ROOTS" for t in node.targets
        ):
            roots: dict[str, str] = ast.literal_eval(node.value)
            return roots
    raise SystemExit("typecheck: setup.py defines no ROOTS mapping")


def project_sources() -> list[BuildSource]:
    """Every module setup.py installs (files in folders with an __init__.py), with its name."""
    sources = []
    for package, folder in package_roots().items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base)
            if not all((base / parent / "__init__.py").is_file() for parent in rel.parents):
                continue
            parts = [package, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            sources.append(BuildSource(str(path.relative_to(ROOT)), ".".join(parts)))
    return sources


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def main(argv: list[str]) -> int:
    """Run mypy over the project; print its messages and a summary; return the exit status."""
    os.chdir(ROOT)
    targets, options = process_options(argv, require_targets=False)
    if targets:
        raise SystemExit("typecheck: checks the whole project; pass mypy options only")
    sources = project_sources()
    messages: list[str] = []

    def flush(_filename: str | None, new: list[str], serious: bool) -> None:
        messages.extend(new)
        for line in new:
            print(line, file=sys.stderr if serious else sys.stdout)

    try:
        build.build(sources, options, flush_errors=flush)
    except CompileError:
        print("typecheck: errors prevented further checking")
        return 2
    errors = [m for m in messages if ": error:" in m]
    if errors:
        files = {m.split(":", 1)[0] for m in errors}
        print(f"Found {_count(len(errors), 'error')} in {_count(len(files), 'file')} "
              f"(checked {len(sources)} source files)")
        return 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
