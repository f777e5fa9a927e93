"""Pass tests: show full diffs for the assertions in the shared helpers."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.passes.util")
