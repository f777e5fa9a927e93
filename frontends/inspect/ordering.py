"""Crossing reduction for the layered layout: barycenter sweeps with contiguous clusters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["count_crossings", "order_layers"]


def count_crossings(layers: Sequence[Sequence[int]], succ: Sequence[Sequence[int]]) -> int:
    """Edge crossings between adjacent layers (inversion counting with a Fenwick tree)."""
    pos = {}
    for layer in layers:
        for i, v in enumerate(layer):
            pos[v] = i
    total = 0
    for li in range(len(layers) - 1):
        nxt = set(layers[li + 1])
        targets = [pos[w] for v in layers[li] for w in sorted(succ[v], key=pos.__getitem__)
                   if w in nxt]
        size = len(layers[li + 1]) + 1
        tree = [0] * (size + 1)
        for seen, t in enumerate(targets):
            i, le = t + 1, 0
            while i > 0:
                le += tree[i]
                i -= i & -i
            total += seen - le  # earlier edges ending right of t
            i = t + 1
            while i <= size:
                tree[i] += 1
                i += i & -i
    return total


def order_layers(
    layer: Sequence[int],
    rank: Sequence[int],
    succ: Sequence[Sequence[int]],
    pred: Sequence[Sequence[int]],
    gpath: Sequence[tuple[str, ...]],
    chain: Sequence[int],
    sweeps: int,
) -> tuple[list[list[int]], int]:
    """Vertices per layer ordered to reduce crossings, and the crossing count.

    Starts from the order of ``rank``; alternating down (predecessor barycenters) and up
    (successor barycenters) sweeps; the order with the fewest crossings wins. Vertices with a
    common cluster prefix in ``gpath`` stay contiguous in each layer; finally sibling items
    (clusters and dummy chains, ``chain[v] >= 0`` numbering the chain of dummy ``v``) are put
    in one left-to-right order valid in every layer, so that their rectangles can be disjoint.
    """
    n_all = len(layer)
    order: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for i in sorted(range(n_all), key=lambda i: (rank[i], i)):
        order[layer[i]].append(i)
    pos = [0.0] * n_all
    _positions(order, pos)
    best = [list(lay) for lay in order]
    best_cross = count_crossings(order, succ)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        gmean = _group_means(gpath, pos)
        seq = range(1, len(order)) if down else range(len(order) - 2, -1, -1)
        for li in seq:
            order[li] = _sort_layer(order[li], pred if down else succ, pos, gpath,
                                    gmean)
            for i, v in enumerate(order[li]):
                pos[v] = (i + 0.5) / len(order[li])
        cross = count_crossings(order, succ)
        if cross < best_cross:
            best, best_cross = [list(lay) for lay in order], cross
    best = _consistent(best, gpath, chain, pos)
    return best, count_crossings(best, succ)


def _consistent(order: list[list[int]], gpath: Sequence[tuple[str, ...]],
                chain: Sequence[int], pos: list[float]) -> list[list[int]]:
    """Re-sort each layer by (item mean position, item) at every cluster level, where an item
    is a cluster or a dummy chain: siblings then keep one order across all layers."""
    _positions(order, pos)

    def items(v: int) -> tuple[str, ...]:
        return (*gpath[v], f"\x01{chain[v]}") if chain[v] >= 0 else gpath[v]

    sums: dict[str, list[float]] = {}
    for lay in order:
        for v in lay:
            for it in items(v):
                acc = sums.setdefault(it, [0.0, 0.0])
                acc[0] += pos[v]
                acc[1] += 1
    mean = {it: s / c for it, (s, c) in sums.items()}

    def key(v: int) -> tuple[object, ...]:
        k: list[object] = []
        for it in items(v):
            k += [mean[it], it]
        return (*k, pos[v], f"\x00{v}")

    return [sorted(lay, key=key) for lay in order]


def _positions(order: Sequence[Sequence[int]], pos: list[float]) -> None:
    for lay in order:
        for i, v in enumerate(lay):
            pos[v] = (i + 0.5) / len(lay)


def _group_means(gpath: Sequence[tuple[str, ...]], pos: list[float]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for v, path in enumerate(gpath):
        for g in path:
            acc = sums.setdefault(g, [0.0, 0.0])
            acc[0] += pos[v]
            acc[1] += 1
    return {g: s / c for g, (s, c) in sums.items()}


def _sort_layer(lay: list[int], ref: Sequence[Sequence[int]], pos: list[float],
                gpath: Sequence[tuple[str, ...]], gmean: Mapping[str, float]) -> list[int]:
    """Order a layer by barycenter, keeping each cluster contiguous; a cluster's key blends
    its members' mean barycenter here with its mean position over all layers (so sibling
    clusters keep one left-to-right order across layers)."""
    bc = {}
    for v in lay:
        nb = ref[v]
        bc[v] = sum(pos[u] for u in nb) / len(nb) if nb else pos[v]
    depth = max((len(gpath[v]) for v in lay), default=0)
    if depth == 0:
        return sorted(lay, key=lambda v: (bc[v], pos[v]))
    sums: dict[str, list[float]] = {}
    for v in lay:
        for g in gpath[v]:
            acc = sums.setdefault(g, [0.0, 0.0])
            acc[0] += bc[v]
            acc[1] += 1
    mean = {g: 0.5 * s / c + 0.5 * gmean.get(g, s / c) for g, (s, c) in sums.items()}

    def key(v: int) -> tuple[object, ...]:
        k: list[object] = []
        path = gpath[v]
        for lvl in range(depth):
            if lvl < len(path):
                k += [mean[path[lvl]], path[lvl]]
            else:
                k += [bc[v], f"\x00{v}"]
        return (*k, bc[v], pos[v])

    return sorted(lay, key=key)
