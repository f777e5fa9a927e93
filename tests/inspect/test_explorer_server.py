"""The explorer's server without a browser: free ports, offline Model Explorer, what it serves."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.inspect.explorer import (
    ExplorerError,
    ExplorerServer,
    explore,
    free_port,
)


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        return bytes(r.read())


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port that a listening socket holds."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_a_busy_port_gives_the_next_free_one_and_says_so(
        busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    p = free_port(busy_port)
    assert p > busy_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))  # really free
    assert f"port {busy_port} in use; using {p}" in capsys.readouterr().out


def test_a_free_port_is_kept_silently(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert free_port(port) == port
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("port", [0, -5, 70000])
def test_a_port_outside_the_tcp_range_is_a_typed_error(port: int) -> None:
    with pytest.raises(ExplorerError, match=f"port {port} is not a TCP port"):
        free_port(port)


@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    pytest.importorskip("model_explorer")
    g = zoo.get("gpt_tiny").trace()
    srv = explore(g, compare="O0", browser=False, port=free_port(18080, quiet=True),
                  onnx=False)
    assert isinstance(srv, ExplorerServer)
    yield srv
    srv.stop()


def _page_data(srv: ExplorerServer) -> dict[str, Any]:
    q = parse_qs(urlparse(srv.url).query)
    return dict(json.loads(q["data"][0]))


def test_server_serves_the_stages_and_overlays(server: ExplorerServer) -> None:
    base = f"http://{server.host}:{server.port}"
    assert _get(f"{base}/check_health") == b"model_explorer_ok"
    assert b"<html" in _get(f"{base}/").lower()
    stages = json.loads(_get(f"{base}/api/v1/load_graphs_json?graph_index=0"))
    graphs = stages["graphCollections"][0]["graphs"]
    assert [g["id"] for g in graphs] == [s.id for s in server.bundle.stages]
    data = _page_data(server)
    assert len(data["nodeData"]) == len(server.bundle.overlays)
    for i, (label, _) in enumerate(server.bundle.overlays):
        assert data["nodeData"][i] == f"node_data://{label}/{i}"
        content = json.loads(_get(f"{base}/api/v1/load_node_data?node_data_index={i}"))
        nd = json.loads(content["content"])
        assert all(v["name"] == label for v in nd.values())


def test_compare_opens_two_panes_each_from_its_own_collection(server: ExplorerServer) -> None:
    data = _page_data(server)
    panes = data["uiState"]["paneStates"]
    assert [p["widthFraction"] for p in panes] == [0.5, 0.5]
    final = [s for s in server.bundle.stages if s.kind == "pass"][-1]
    assert panes[1]["selectedGraphId"] == final.id
    assert panes[1]["selectedCollectionLabel"] == "gpt_tiny (stages)"
    assert panes[0]["selectedGraphId"] == "00 traced (compared)"
    base = f"http://{server.host}:{server.port}"
    left = json.loads(_get(f"{base}/api/v1/load_graphs_json?graph_index=1"))
    assert [g["id"] for g in left["graphCollections"][0]["graphs"]] == ["00 traced (compared)"]
    i = [label for label, _ in server.bundle.overlays].index("diff O0 -> final")
    nd = json.loads(json.loads(_get(f"{base}/api/v1/load_node_data?node_data_index={i}"))
                    ["content"])
    assert nd["00 traced (compared)"] == nd["00 traced"]  # the copy is coloured too


def test_the_version_check_stays_offline(server: ExplorerServer) -> None:
    base = f"http://{server.host}:{server.port}"
    answer = json.loads(_get(f"{base}/api/v1/check_new_version"))
    assert answer == {"version": "", "runningVersion": "", "releaseUrl": "", "desktopAppUrl": ""}


def test_a_second_server_on_a_busy_port_moves_on_and_stops(
        server: ExplorerServer, capsys: pytest.CaptureFixture[str]) -> None:
    g = zoo.get("mlp_tiny").trace()
    srv = explore(g, browser=False, port=server.port, onnx=False)
    assert isinstance(srv, ExplorerServer)
    try:
        assert srv.port != server.port
        assert f"port {server.port} in use; using {srv.port}" in capsys.readouterr().out
        assert srv.alive and server.alive
        assert "uiState" in _page_data(srv)
    finally:
        srv.stop()
    assert not srv.alive
    assert server.alive


def test_notebook_display_is_an_iframe_of_the_page(server: ExplorerServer) -> None:
    html = server._repr_html_()
    assert html.startswith("<iframe") and server.url in html
