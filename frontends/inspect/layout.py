"""A layered (Sugiyama-style) layout for DAGs, in pure Python and linear time per sweep.

Steps: (1) layer assignment by longest path from the sources, with pure sources (parameters,
constants) pulled down to just above their first consumer; (2) dummy vertices on edges spanning
several layers (within a budget of a few per vertex; longer edges are drawn directly);
(3) crossing reduction by alternating barycenter sweeps that keep the vertices of a cluster
contiguous in each layer, keeping the order with the fewest crossings; (4) x coordinates by
repeated isotonic regression (pool-adjacent-violators) of each vertex towards the mean x of its
neighbours under the in-layer order and spacing constraints; (5) cluster rectangles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from .ordering import count_crossings, order_layers

__all__ = ["Box", "Layout", "count_crossings", "layered_layout"]


@dataclass
class Box:
    """A placed vertex: centre (x, y), size, layer and position in its layer."""

    id: str
    x: float
    y: float
    w: float
    h: float
    layer: int
    order: int

    @property
    def left(self) -> float:
        """Left edge."""
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        """Right edge."""
        return self.x + self.w / 2

    @property
    def top(self) -> float:
        """Top edge."""
        return self.y - self.h / 2

    @property
    def bottom(self) -> float:
        """Bottom edge."""
        return self.y + self.h / 2


@dataclass
class Layout:
    """Placed boxes, edge routes (polylines through dummy points), cluster rects and size."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str, list[tuple[float, float]]]]
    clusters: dict[str, tuple[float, float, float, float]]  # path -> (x, y, w, h)
    layers: list[list[str]]  # real vertices per layer, left to right
    width: float
    height: float
    crossings: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def _pav(targets: list[float], weights: list[float]) -> list[float]:
    """Non-decreasing least-squares fit (pool adjacent violators), O(n)."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for t, w in zip(targets, weights, strict=True):
        blocks.append([t * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, wt, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += wt
            blocks[-1][2] += c
    out: list[float] = []
    for s, wt, c in blocks:
        out += [s / wt] * int(c)
    return out


class _State:
    """Working arrays of a layout: vertices 0..n_real-1 are real, the rest dummies."""

    def __init__(self, ids: list[str], sizes: Mapping[str, tuple[float, float]],
                 groups: Mapping[str, Sequence[str]]) -> None:
        self.ids = ids
        self.n_real = len(ids)
        self.gpath: list[tuple[str, ...]] = [tuple(groups.get(v, ())) for v in ids]
        self.width = [float(sizes[v][0]) for v in ids]
        self.height = [float(sizes[v][1]) for v in ids]
        self.succ: list[list[int]] = [[] for _ in ids]
        self.pred: list[list[int]] = [[] for _ in ids]
        self.layer: list[int] = []
        self.chains: dict[tuple[int, int], list[int]] = {}
        self.order: list[list[int]] = []
        self.xs: list[float] = []

    def add_dummy(self, layer: int, group: tuple[str, ...]) -> int:
        self.layer.append(layer)
        self.gpath.append(group)
        self.width.append(2.0)
        self.height.append(0.0)
        self.succ.append([])
        self.pred.append([])
        return len(self.layer) - 1


def layered_layout(
    vertices: Sequence[str],
    edges: Sequence[tuple[str, str]],
    sizes: Mapping[str, tuple[float, float]],
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    sweeps: int = 6,
    node_gap: float = 20.0,
    layer_gap: float | None = None,
    cluster_pad: float = 8.0,
    label_h: float = 14.0,
    dummy_budget: int | None = None,
    margin: float = 20.0,
) -> Layout:
    """Lay out a DAG top to bottom. ``groups`` maps a vertex to its cluster paths (outermost
    first); members of a cluster stay contiguous within each layer and sibling clusters that
    share layers are pushed apart so that their rectangles do not overlap."""
    st = _State(list(dict.fromkeys(vertices)), sizes, groups or {})
    index = {v: i for i, v in enumerate(st.ids)}
    pairs = list(dict.fromkeys((index[u], index[v]) for u, v in edges if u != v))
    for u, v in pairs:
        st.succ[u].append(v)
        st.pred[v].append(u)
    _assign_layers(st)
    long_edges = _insert_dummies(st, pairs, dummy_budget if dummy_budget is not None
                                 else 4 * st.n_real + 100)
    rank = list(range(st.n_real)) + [0] * (len(st.layer) - st.n_real)
    for (u, _), chain in st.chains.items():
        for d in chain:
            rank[d] = u
    chain_of = [-1] * len(st.layer)
    for k, chain in enumerate(st.chains.values()):
        for d in chain:
            chain_of[d] = k
    st.order, crossings = order_layers(st.layer, rank, st.succ, st.pred, st.gpath, chain_of,
                                       sweeps)
    depth = max((len(g) for g in st.gpath), default=0)
    gap = layer_gap if layer_gap is not None else 36.0 + min(64.0, (cluster_pad + label_h) * depth)
    ys: list[float] = []
    y = margin + label_h
    for lay in st.order:
        h = max((st.height[v] for v in lay), default=0.0)
        ys.append(y + h / 2)
        y += h + gap
    seps = _separations(st, node_gap, cluster_pad)
    _assign_x(st, seps)
    for _ in range(3):
        if not _separate_clusters(st, seps, chain_of, cluster_pad, node_gap):
            break
    xs, width, ids = st.xs, st.width, st.ids
    left = min((xs[v] - width[v] / 2 for v in range(len(xs))), default=0.0)
    shift = margin + cluster_pad * depth - left
    st.xs = xs = [x + shift for x in xs]

    boxes: dict[str, Box] = {}  # real vertices, numbered within their layer
    all_boxes: dict[int, Box] = {}  # dummies too (they widen clusters and the picture)
    for li, lay in enumerate(st.order):
        k = 0
        for v in lay:
            box = Box(ids[v] if v < st.n_real else f"~{v}", xs[v], ys[li], width[v],
                      st.height[v], li, k)
            all_boxes[v] = box
            if v < st.n_real:
                boxes[ids[v]] = box
                k += 1
    routes = [(ids[u], ids[v], [(xs[d], ys[st.layer[d]]) for d in st.chains.get((u, v), [])])
              for u, v in pairs]
    clusters = _cluster_rects(all_boxes, st.gpath, cluster_pad, label_h)
    right = max([b.right for b in all_boxes.values()]
                + [x + w for x, _, w, _ in clusters.values()], default=0.0)
    bottom = max([b.bottom for b in all_boxes.values()]
                 + [y + h for _, y, _, h in clusters.values()], default=0.0)
    return Layout(boxes, routes, clusters,
                  [[ids[v] for v in lay if v < st.n_real] for lay in st.order],
                  right + margin, bottom + margin, crossings,
                  {"layers": len(st.order), "dummies": len(st.layer) - st.n_real,
                   "long_edges": long_edges})


def _assign_layers(st: _State) -> None:
    """Longest path from the sources (Kahn); pure sources then sit just above their first
    consumer instead of at the top."""
    n = st.n_real
    indeg = [len(p) for p in st.pred]
    queue = [i for i in range(n) if indeg[i] == 0]
    topo: list[int] = []
    while queue:
        u = queue.pop()
        topo.append(u)
        for v in st.succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                queue.append(v)
    if len(topo) != n:
        raise ValueError("layered_layout: the graph has a cycle")
    layer = [0] * n
    for u in topo:
        for v in st.succ[u]:
            layer[v] = max(layer[v], layer[u] + 1)
    for u in range(n):
        if not st.pred[u] and st.succ[u]:
            layer[u] = max(0, min(layer[v] for v in st.succ[u]) - 1)
    st.layer = layer


def _insert_dummies(st: _State, pairs: list[tuple[int, int]], budget: int) -> int:
    """Dummy chains on edges spanning layers, shortest first; returns how many were left long.
    The adjacency lists become those of the layered graph (edges between adjacent layers)."""
    layer = st.layer
    skipped = 0
    for u, v in sorted(pairs, key=lambda e: layer[e[1]] - layer[e[0]]):
        span = layer[v] - layer[u]
        if span <= 1:
            continue
        if span - 1 > budget:
            skipped += 1
            continue
        budget -= span - 1
        common = _common(st.gpath[u], st.gpath[v])
        chain = [st.add_dummy(layer[u] + k, common) for k in range(1, span)]
        st.succ[u].remove(v)
        st.pred[v].remove(u)
        for a, b in pairwise([u, *chain, v]):
            st.succ[a].append(b)
            st.pred[b].append(a)
        st.chains[(u, v)] = chain
    return skipped


def _separations(st: _State, node_gap: float, pad: float) -> list[list[float]]:
    """Per layer, the smallest offset of each vertex from the first one (sizes, gaps and
    cluster padding between neighbours of different clusters)."""
    seps = []
    for lay in st.order:
        s = [0.0]
        for a, b in pairwise(lay):
            c = len(_common(st.gpath[a], st.gpath[b]))
            extra = pad * (len(st.gpath[a]) - c + len(st.gpath[b]) - c)
            base = node_gap if a < st.n_real and b < st.n_real else node_gap / 2
            s.append(s[-1] + (st.width[a] + st.width[b]) / 2 + base + extra)
        seps.append(s)
    return seps


def _assign_x(st: _State, seps: list[list[float]]) -> None:
    """Rounds of isotonic regression of each layer towards its neighbours' mean x: down
    (predecessors), up (successors), finally both."""
    xs = [0.0] * len(st.layer)
    for lay, s in zip(st.order, seps, strict=True):
        for v, off in zip(lay, s, strict=True):
            xs[v] = off
    weight = [1.0] * st.n_real + [2.0] * (len(st.layer) - st.n_real)
    for direction in [True, False] * 4 + [None]:
        seq = range(len(st.order)) if direction is not False else range(len(st.order) - 1,
                                                                         -1, -1)
        for li in seq:
            lay = st.order[li]
            targets = []
            for v, off in zip(lay, seps[li], strict=True):
                if direction is None:
                    nb = st.pred[v] + st.succ[v]
                else:
                    nb = st.pred[v] if direction else st.succ[v]
                d = sum(xs[u] for u in nb) / len(nb) if nb else xs[v]
                targets.append(d - off)
            fit = _pav(targets, [weight[v] for v in lay])
            for v, f, off in zip(lay, fit, seps[li], strict=True):
                xs[v] = f + off
    st.xs = xs


def _separate_clusters(st: _State, seps: list[list[float]], chain_of: list[int], pad: float,
                       gap: float) -> bool:
    """Push a cluster and a sibling item (cluster, dummy chain or lone vertex) sharing layers
    apart so that their padded extents do not overlap, then restore in-layer spacing.
    Returns True if anything moved."""
    children: dict[tuple[str, ...], dict[object, list[int]]] = {}
    for v, path in enumerate(st.gpath):
        for d in range(len(path) + 1):
            if d < len(path):
                key: object = path[d]
            else:
                key = ("chain", chain_of[v]) if chain_of[v] >= 0 else ("vertex", v)
            children.setdefault(path[:d], {}).setdefault(key, []).append(v)
    moved = False
    xs = st.xs
    npos = [0.0] * len(xs)  # normalised in-layer position: the order the items were sorted by
    for lay in st.order:
        for i, v in enumerate(lay):
            npos[v] = (i + 0.5) / len(lay)
    for parent, items in sorted(children.items(), key=lambda kv: len(kv[0])):
        if not any(isinstance(k, str) for k in items):
            continue
        depth = len(parent)
        ext = {}
        for k, members in items.items():
            ext[k] = [min(xs[v] - st.width[v] / 2 - pad * (len(st.gpath[v]) - depth)
                          for v in members),
                      max(xs[v] + st.width[v] / 2 + pad * (len(st.gpath[v]) - depth)
                          for v in members),
                      min(st.layer[v] for v in members), max(st.layer[v] for v in members)]
        keys = sorted(items, key=lambda k: sum(npos[v] for v in items[k]) / len(items[k]))
        earlier: list[object] = []
        earlier_clusters: list[object] = []
        for kj in keys:
            need = 0.0
            is_cluster = isinstance(kj, str)
            for ki in earlier if is_cluster else earlier_clusters:
                a, b = ext[ki], ext[kj]
                if a[2] <= b[3] and b[2] <= a[3]:
                    need = max(need, a[1] + gap - b[0])
            if need > 0.5:
                moved = True
                for v in items[kj]:
                    xs[v] += need
                ext[kj][0] += need
                ext[kj][1] += need
            earlier.append(kj)
            if is_cluster:
                earlier_clusters.append(kj)
    for lay, s in zip(st.order, seps, strict=True):
        for i in range(1, len(lay)):
            low = xs[lay[i - 1]] + s[i] - s[i - 1]
            if xs[lay[i]] < low:
                xs[lay[i]] = low
    return moved


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    return a[:k]


def _cluster_rects(boxes: Mapping[int, Box], gpath: Sequence[tuple[str, ...]],
                   pad: float, label_h: float) -> dict[str, tuple[float, float, float, float]]:
    """Rectangles of clusters (x, y, w, h), outer ones first: each holds its member boxes
    (dummies included) and child rectangles with ``pad`` around and a label strip on top."""
    ext: dict[str, list[float]] = {}
    parent: dict[str, str | None] = {}
    for v, b in boxes.items():
        path = gpath[v]
        for i, g in enumerate(path):
            parent.setdefault(g, path[i - 1] if i else None)
        if path:
            e = ext.setdefault(path[-1], [b.left, b.top, b.right, b.bottom])
            e[:] = [min(e[0], b.left), min(e[1], b.top), max(e[2], b.right), max(e[3], b.bottom)]
    out: dict[str, tuple[float, float, float, float]] = {}
    for g in sorted(parent, key=lambda g: -_depth(g, parent)):
        if g not in ext:
            continue
        x0, y0, x1, y1 = ext[g]
        x0, y0, x1, y1 = x0 - pad, y0 - pad - label_h, x1 + pad, y1 + pad
        out[g] = (x0, y0, x1 - x0, y1 - y0)
        p = parent[g]
        if p is not None:
            e = ext.setdefault(p, [x0, y0, x1, y1])
            e[:] = [min(e[0], x0), min(e[1], y0), max(e[2], x1), max(e[3], y1)]
    return dict(sorted(out.items(), key=lambda kv: _depth(kv[0], parent)))


def _depth(g: str, parent: Mapping[str, str | None]) -> int:
    d = 0
    p = parent.get(g)
    while p is not None:
        d += 1
        p = parent.get(p)
    return d
