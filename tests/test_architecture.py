"""Layering and size rules of the code base."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY_FILES = sorted(
    p for d in ("lbdl_graph", "frontends", "passes", "backends", "benchmarks", "examples", "tests")
    for p in (ROOT / d).rglob("*.py")
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                base = ".".join(path.relative_to(ROOT).with_suffix("").parts[: -node.level])
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "lbdl_graph").rglob("*.py")), ids=str)
def test_core_imports_nothing_from_outer_layers(path: Path) -> None:
    if path.name == "__main__.py":  # the CLI entry point dispatches to frontends.cli
        return
    bad = {m for m in _imports(path)
           if m.startswith(("lbdl_graph.frontends", "lbdl_graph.passes", "lbdl_graph.backends",
                            "frontends", "passes", "backends"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 1000


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [("passes", ("lbdl_graph.frontends", "lbdl_graph.backends")),
     ("backends", ("lbdl_graph.frontends",))],
)
def test_layers_import_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(forbidden)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
