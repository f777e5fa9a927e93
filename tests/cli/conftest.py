"""Fixtures of the CLI tests: small models written once per session by the CLI itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import cli


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a full-length run (about 10-60 s)")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``mlp.onnx`` (mlp_tiny) and ``lenet.onnx`` (lenet_digits)."""
    d = tmp_path_factory.mktemp("models")
    for name, file in (("mlp_tiny", "mlp.onnx"), ("lenet_digits", "lenet.onnx")):
        r = cli("export", name, "-o", str(d / file))
        assert r.returncode == 0, r.stderr
    return d
