"""An interactive, hierarchical viewer: Google's Model Explorer, served from 127.0.0.1.

:func:`explore` shows a graph at every stage of a pipeline (see :mod:`.explorer_stages`) in one
graph collection with node-data overlays, either by starting a local Model Explorer server
(:func:`serve`; nothing is fetched from the network) or, with ``out=DIR``, by writing the graph
JSON and the node-data JSON files that any Model Explorer loads::

    from lbdl_graph.frontends.inspect import explore
    viewer = explore(graph, level="O2", compare="O0")   # a browser tab opens
    viewer.url, viewer.stop()
    explore(graph, out="runs/gpt/explorer")             # files only

In Jupyter the returned :class:`ExplorerServer` displays as an embedded page.

Model Explorer's ``server.start`` blocks, exits the process on a busy port and asks PyPI for a
newer version; here it runs in a daemon thread on a port checked free beforehand (the next free
one when the requested port is taken, which is said), the version check is replaced by an
offline answer, and its Flask app runs on a werkzeug server that :meth:`ExplorerServer.stop`
shuts down.
"""

from __future__ import annotations

import errno
import html
import json
import socket
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbdl_graph.graph import Graph

from .common import Bindings
from .explorer_stages import Bundle, ExplorerError, build_bundle, build_stages, write_bundle

__all__ = ["ExplorerError", "ExplorerServer", "check_port", "explore", "free_port", "serve"]

HOST = "127.0.0.1"
PORT_TRIES = 50
_SERVERS: dict[int, Any] = {}  # port -> the werkzeug server running Model Explorer's app
_LOCK = threading.Lock()


def check_port(port: int) -> int:
    """``port`` if it is a TCP port number, else an :class:`ExplorerError`."""
    if not 0 < port < 65536:
        raise ExplorerError(f"port {port} is not a TCP port (1-65535)")
    return port


def free_port(port: int, host: str = HOST, tries: int = PORT_TRIES, *, quiet: bool = False
              ) -> int:
    """``port`` if it can be bound on ``host``, else the next free one (said on stdout)."""
    check_port(port)
    for p in range(port, min(port + tries, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, p))
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise ExplorerError(f"cannot listen on {host}:{p}: {e.strerror or e}") from None
        if p != port and not quiet:
            print(f"port {port} in use; using {p}")
        return p
    raise ExplorerError(f"no free port on {host} in {port}..{port + tries - 1}; "
                        f"choose another with --port")


@dataclass
class ExplorerServer:
    """A running Model Explorer: its address (``url`` opens the collection) and a stop."""

    url: str
    host: str
    port: int
    thread: threading.Thread
    bundle: Bundle

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the server down (the page stops working)."""
        srv = _SERVERS.pop(self.port, None)
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the server still answers."""
        return self.thread.is_alive() and _healthy(self.host, self.port)

    def _repr_html_(self) -> str:
        return (f'<iframe src="{html.escape(self.url)}" width="100%" height="850" '
                f'style="border:1px solid #ccc"></iframe>')

    def __repr__(self) -> str:
        return f"<ExplorerServer {self.bundle.name} at http://{self.host}:{self.port}/>"


def _offline_version_check(print_msg: bool = True) -> dict[str, str]:
    """What Model Explorer's version check answers when it learns nothing (no network)."""
    return {"version": "", "runningVersion": "", "releaseUrl": "", "desktopAppUrl": ""}


def _patch(server: Any) -> None:
    """Keep Model Explorer's server offline and stoppable (idempotent)."""
    import flask
    from werkzeug.serving import make_server

    server._check_new_version = _offline_version_check
    server.print = lambda *args, **kwargs: None  # its banner; explore() prints the address
    if getattr(server.flask, "_lbdl_stoppable", False):
        return

    class _Flask(flask.Flask):
        def run(self, host: str | None = None, port: int | None = None, debug: bool | None = None,
                load_dotenv: bool = True, **options: Any) -> None:
            srv = make_server(host or HOST, int(port or 0), self, threaded=True)
            with _LOCK:
                _SERVERS[srv.server_port] = srv
            srv.serve_forever()

    proxy = types.ModuleType("flask")
    proxy.__dict__.update(flask.__dict__)
    proxy.Flask = _Flask  # type: ignore[attr-defined]
    proxy._lbdl_stoppable = True  # type: ignore[attr-defined]
    server.flask = proxy


def _healthy(host: str, port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}:{port}/check_health", timeout=2) as r:
            return bool(r.read() == b"model_explorer_ok")
    except OSError:
        return False


def _config(bundle: Bundle, panes: Sequence[str]) -> tuple[Any, list[tuple[str, str]]]:
    """Model Explorer's config for ``bundle`` and the (collection label, graph id) of each pane.

    The stages are one collection ("<name> (stages)"). With two panes the left one gets its own
    collection holding a copy of its graph (id "<id> (compared)", overlays copied too): Model
    Explorer applies node data once per collection, to the first graph it shows, so a second
    pane on the same collection would open uncoloured.
    """
    import model_explorer

    cfg = model_explorer.config()
    collections = [("stages", bundle.collection["graphs"])]
    where = [(f"{bundle.name} (stages)", gid) for gid in panes]
    overlays = bundle.overlays
    if len(panes) == 2:
        alias = f"{panes[0]} (compared)"
        left = [{**g, "id": alias} for g in bundle.collection["graphs"] if g["id"] == panes[0]]
        collections.append(("compared", left))
        where[0] = (f"{bundle.name} (compared)", alias)
        overlays = [(label, {**data, alias: data[panes[0]]} if panes[0] in data else data)
                    for label, data in overlays]
    for i, (label, graphs) in enumerate(collections):
        coll = {"label": label, "graphs": graphs}
        cfg.graphs_list.append(json.dumps({"graphCollections": [coll]}))
        cfg.model_sources.append({"url": f"graphs://{bundle.name}/{i}"})
    for label, data in overlays:  # no target model: each applies to every collection
        cfg.add_node_data(label, json.dumps(data))
    return cfg, where


def page_url(base: str, cfg: Any, panes: Sequence[tuple[str, str]] = ()) -> str:
    """The page showing the config's graphs, ``panes`` (collection label, graph id) open."""
    from urllib.parse import quote

    data: dict[str, Any] = {"models": cfg.model_sources, "nodeData": cfg.node_data_sources,
                            "nodeDataTargets": cfg.node_data_target_models}
    if panes:
        data["uiState"] = {"paneStates": [
            {"deepestExpandedGroupNodeIds": [], "selectedNodeId": "", "selectedGraphId": gid,
             "selectedCollectionLabel": label, "widthFraction": 1 / len(panes)}
            for label, gid in panes]}
    return f"{base}/?data={quote(json.dumps(data))}"


def _import_server() -> Any:
    """``model_explorer.server``, imported without torch when torch is not loaded yet (the
    package imports it only for its PyTorch adapter, which serving JSON graphs never uses;
    that saves seconds per start)."""
    if "model_explorer.server" in sys.modules:
        return sys.modules["model_explorer.server"]
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ImportError
    try:
        from model_explorer import server
    except ImportError as e:
        raise ExplorerError("the interactive viewer needs ai-edge-model-explorer "
                            f"(pip install ai-edge-model-explorer): {e}") from None
    finally:
        if blocked:
            del sys.modules["torch"]
    return server


def serve(bundle: Bundle, *, port: int = 8080, host: str = HOST, open_browser: bool = True,
          panes: Sequence[str] = (), timeout: float = 60.0) -> ExplorerServer:
    """Start Model Explorer on ``host`` (the first free port from ``port``) showing ``bundle``
    (graph ids ``panes`` open, two side by side); returns once the server answers."""
    server = _import_server()
    _patch(server)
    cfg, where = _config(bundle, panes)
    requested = port
    for _ in range(5):
        port = free_port(port, host, quiet=True)
        thread = threading.Thread(
            target=server.start, name=f"model-explorer-{port}", daemon=True,
            kwargs={"host": host, "port": port, "config": cfg, "no_open_in_browser": True,
                    "skip_health_check": True})
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and not _healthy(host, port):
            if time.monotonic() > deadline:
                raise ExplorerError(f"Model Explorer did not answer on {host}:{port} within "
                                    f"{timeout:.0f} s")
            time.sleep(0.05)
        if thread.is_alive():
            break
        port += 1  # another process took the port between the check and the bind
    else:
        raise ExplorerError(f"Model Explorer could not listen on {host} from port {requested}")
    if port != requested:
        print(f"port {requested} in use; using {port}")
    url = page_url(f"http://{host}:{port}", cfg, where)
    if open_browser:
        import webbrowser

        webbrowser.open_new_tab(url)
    return ExplorerServer(url, host, port, thread, bundle)


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def explore(graph: Graph, *, level: str | Sequence[str] = "O2", compare: str | None = None,
            train: Any = None, out: str | Path | None = None, port: int = 8080,
            browser: bool | None = None, bindings: Bindings | None = None,
            onnx: bool = True, timing: bool = False, name: str | None = None,
            stages: Sequence[Any] | None = None) -> ExplorerServer | list[Path]:
    """Show ``graph`` at every stage of ``level`` in Model Explorer.

    ``compare``: also diff another level (``"O0"``: the traced graph) against the final graph.
    ``train``: a ``TrainStep`` (or a compiled step graph) to show as the training step; ``True``
    compiles one with Adam from a graph that has a ``loss`` output. ``out``: write the JSON files
    into this directory and return their paths instead of serving. ``browser``: open a tab
    (default: yes, except in Jupyter, where the returned server displays inline). ``timing``: add
    the measured time per node. ``stages``: show these instead of building them.
    """
    if train is True:
        if "loss" not in graph.output_names():
            raise ExplorerError(f"train=True needs a graph with a 'loss' output; graph "
                                f"'{graph.name}' has {graph.output_names()} (trace the model "
                                "with its loss, or pass a TrainStep)")
        from lbdl_graph.passes.optim import Adam
        from lbdl_graph.passes.train_step import make_train_step

        train = make_train_step(graph, Adam())
    elif train is False:
        train = None
    staged = list(stages) if stages is not None else build_stages(
        graph, level, compare=compare, train=train, onnx=onnx, onnx_weights=timing)
    bundle = build_bundle(name or graph.name, staged, bindings=bindings, compare=compare,
                          time=timing)
    if out is not None:
        return write_bundle(bundle, out)
    return serve(bundle, port=port, panes=default_panes(bundle, compare),
                 open_browser=not _in_notebook() if browser is None else browser)


def default_panes(bundle: Bundle, compare: str | None = None) -> list[str]:
    """The graphs the page opens on: the final graph, beside the compared stage if any."""
    from .explorer_stages import compare_index, final_stage

    stages = bundle.stages
    final = final_stage(stages)
    if compare is None:
        return [final.id]
    before = stages[compare_index(stages, compare)]
    return [before.id, final.id] if before is not final else [final.id]


def overlay_names(bundle: Bundle) -> list[str]:
    """The overlay names of a bundle, in the order Model Explorer lists them."""
    return [label for label, _ in bundle.overlays]


def stage_summary(bundle: Bundle) -> list[dict[str, Any]]:
    """Per stage: id, kind, node count and note (what the CLI prints)."""
    out = []
    for s, g in zip(bundle.stages, bundle.collection["graphs"], strict=True):
        out.append({"id": s.id, "kind": s.kind, "nodes": len(g["nodes"]), "note": s.note})
    return out
