"""The command line, run as a subprocess: exit codes 0 (ok), 1 (failed), 2 (usage)."""

from __future__ import annotations

import json
import subprocess
import sys

from lbdl_graph import OPS, __version__


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m lbdl_graph ARGS`."""
    return subprocess.run([sys.executable, "-m", "lbdl_graph", *args], capture_output=True,
                          text=True, timeout=120)


def test_version() -> None:
    r = cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_ops_lists_every_op_with_counts() -> None:
    r = cli("ops")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["op", "schema"]
    footer = ("missing", str(len(OPS)))
    listed = {ln.split()[0] for ln in lines[1:] if ln and not ln.startswith(footer)}
    assert set(OPS) <= listed
    assert f"{len(OPS)} ops" in r.stdout


def test_ops_json() -> None:
    r = cli("ops", "--json")
    rows = json.loads(r.stdout)
    assert {row["op"] for row in rows} == set(OPS)
    assert all(row["schema"] == "yes" for row in rows)


def test_usage_errors_exit_2() -> None:
    assert cli("no-such-verb").returncode == 2
    assert cli("ops", "--bogus").returncode == 2
    assert cli().returncode == 2
