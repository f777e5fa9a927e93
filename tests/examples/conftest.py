"""Fixtures for tests that import a script from ``examples/`` as a module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def import_example() -> Iterator[Callable[[str], ModuleType]]:
    """``import_example("rag")`` imports ``examples/rag.py``; ``examples/`` leaves
    ``sys.path`` again when the test module ends."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(EXAMPLES))
