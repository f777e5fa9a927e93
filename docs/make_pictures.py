"""Make the README's pictures: the default `viz` SVG of GPT-2 small and the explorer page.

    python docs/make_pictures.py            # writes docs/gpt2_small_viz.png, docs/explorer.png

Both are real renders: the first is the picture `lbdl-graph viz gpt2_small` writes (collapsed
by scope, laid out by Graphviz dot), rasterised by the same engine; the explorer shot is Google's
Model Explorer serving the zoo GPT-2 small on 127.0.0.1, with the first block expanded by a
search, its attention layer's fused q/k/v projection selected and the MACs overlay on.
Needs the system `chromium`, `playwright` (never `playwright install`) and
`ai-edge-model-explorer`; every request not to 127.0.0.1 is blocked.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-dev-shm-usage",
        "--disable-component-update", "--no-first-run"]


def _local_only(page: Any) -> None:
    page.route("**/*", lambda r: r.continue_() if urlparse(r.request.url).hostname
               == "127.0.0.1" else r.abort())


def viz_png(model: str, out: Path) -> Path:
    """The default picture of a zoo model (what `lbdl-graph viz MODEL` draws), rasterised by
    the same dot engine at 100%."""
    from lbdl_graph.frontends.inspect import draw_svg, find_engine, to_dot
    from lbdl_graph.frontends.zoo import ZOO
    from lbdl_graph.passes.fold_parameters import fold_params

    graph = fold_params(ZOO[model].trace()).graph
    _, pic = draw_svg(graph)  # the automatic depth of the default picture
    dot = to_dot(graph, depth=pic.depth)
    res = subprocess.run([find_engine(), "-Tpng"], input=dot.encode(), capture_output=True,
                         timeout=120, check=True)
    out.write_bytes(res.stdout)
    return out


def explorer_png(browser: Any, model: str, out: Path) -> Path:
    """Model Explorer on a zoo GPT: a block expanded by search, a node selected."""
    from lbdl_graph.frontends.inspect.explorer import ExplorerServer, explore, free_port
    from lbdl_graph.frontends.zoo import ZOO

    srv = explore(ZOO[model].trace(), browser=False, port=free_port(18480, quiet=True),
                  onnx=False)
    assert isinstance(srv, ExplorerServer)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(180_000)
    try:
        _local_only(page)
        page.goto(srv.url)
        search = page.locator("input[placeholder*='Search']").first
        search.wait_for()
        search.fill("layers.0.attn/linear")
        results = page.locator(".search-results-container")
        results.get_by_text("1 result").wait_for()
        results.get_by_text("linear", exact=True).first.click(modifiers=["Alt"])
        page.get_by_text("NODE INFO").first.wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out))
    finally:
        page.close()
        srv.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE, help="folder for the PNG files")
    p.add_argument("--viz-model", default="gpt2_small")
    p.add_argument("--explore-model", default="gpt2_small")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("needs the system chromium (Debian package chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            for path in (viz_png(args.viz_model, args.out / f"{args.viz_model}_viz.png"),
                         explorer_png(browser, args.explore_model, args.out / "explorer.png")):
                print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
