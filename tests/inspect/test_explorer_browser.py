"""The explorer in a real browser: headless Debian Chromium driven by Playwright.

The page of a zoo GPT is opened from the local server (every request not to 127.0.0.1 is
blocked: the page needs no network); the test finds a node of a block's attention layer by
search, which expands ``layers.0`` and ``layers.0/attn``, checks the node's attributes and
overlay values, and saves a screenshot under ``tmp_path`` (and ``$LBDL_ARTIFACTS`` when set).
Nothing is downloaded: the system browser is used (``executable_path``), never
``playwright install``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from lbdl_graph.frontends import zoo
from lbdl_graph.frontends.inspect.explorer import ExplorerServer, explore, free_port
from lbdl_graph.frontends.inspect.explorer_data import mac_values
from lbdl_graph.frontends.inspect.scopes import scope_tree

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-dev-shm-usage",
        "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 40_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser on PATH "
                                "(Debian package chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed")
    g = zoo.get("gpt_tiny").trace()
    srv = explore(g, browser=False, port=free_port(18180, quiet=True), onnx=False)
    assert isinstance(srv, ExplorerServer)
    yield srv
    srv.stop()


def _page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    blocked: list[str] = []

    def route(r: Any) -> None:
        if urlparse(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url)
    return page, blocked


def _save(page: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    artifacts = os.environ.get("LBDL_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / name)
    return shot


def _ui_state(page: Any) -> dict[str, Any]:
    data = json.loads(parse_qs(urlparse(page.url).query)["data"][0])
    return dict(data.get("uiState") or {})


def test_gpt_page_search_expand_and_overlay(browser: Any, server: ExplorerServer,
                                            tmp_path: Path) -> None:
    page, blocked = _page(browser, server.url)
    try:
        search = page.locator("input[placeholder*='Search']").first
        search.wait_for()
        # the overlays are loaded and listed
        page.get_by_text("pass diff: made by this pass").first.wait_for()
        assert page.get_by_text("MACs").count() >= 1
        # it opens collapsed: the final graph, nothing expanded
        pane = _ui_state(page)["paneStates"][0]
        final = [s for s in server.bundle.stages if s.kind in ("traced", "pass")][-1]
        assert pane["selectedGraphId"] == final.id
        assert pane["deepestExpandedGroupNodeIds"] == []
        # search for the fused q/k/v projection of block 0 and locate it (Alt+click)
        search.fill("layers.0.attn/linear")
        results = page.locator(".search-results-container")
        results.get_by_text("1 result").wait_for()
        results.get_by_text("linear", exact=True).first.click(modifiers=["Alt"])
        page.get_by_text("NODE INFO").first.wait_for()
        page.wait_for_timeout(500)
        pane = _ui_state(page)["paneStates"][0]
        assert pane["selectedNodeId"] == "layers.0.attn/linear"
        assert any(g.startswith("layers.0") for g in pane["deepestExpandedGroupNodeIds"])
        body = page.inner_text("body")
        # the node's attributes and its overlay values
        assert "fuse_linear" in body  # origin
        assert "fused: fuse_linear" in body  # the pass diff overlay names the rule
        macs = mac_values(final.graph)["layers.0.attn/linear"]  # type: ignore[arg-type]
        assert f"{macs:g}" in body
        shot = _save(page, tmp_path, "explorer_gpt_tiny.png")
        assert shot.stat().st_size > 10_000
    finally:
        page.close()
    assert all(urlparse(u).hostname != "127.0.0.1" for u in blocked)


def test_compare_opens_both_stages_coloured_side_by_side(browser: Any, tmp_path: Path) -> None:
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed")
    g = zoo.get("gpt_tiny").trace()
    srv = explore(g, compare="O0", browser=False, port=free_port(18280, quiet=True),
                  onnx=False)
    assert isinstance(srv, ExplorerServer)
    page, _ = _page(browser, srv.url)
    try:
        page.locator("input[placeholder*='Search']").nth(1).wait_for()
        diff = page.get_by_text("diff O0 -> final")
        diff.nth(1).wait_for()  # listed (and loaded) in both panes
        panes = _ui_state(page)["paneStates"]
        final = [s for s in srv.bundle.stages if s.kind == "pass"][-1]
        assert [p["selectedGraphId"] for p in panes] == ["00 traced (compared)", final.id]
        # both panes got their overlays: each one's stats table shows layers.0's share of the
        # MACs (a pane without node data shows '-')
        summaries = page.locator("node-data-provider-summary-panel")
        assert summaries.count() == 2
        for i, graph in enumerate((g, final.graph)):
            t = scope_tree(graph)
            share = f"{100 * t.children['layers.0'].total_macs / t.total_macs:.1f}"
            summaries.nth(i).get_by_text(share, exact=True).first.wait_for()
        _save(page, tmp_path, "explorer_gpt_tiny_compare.png")
    finally:
        page.close()
        srv.stop()
