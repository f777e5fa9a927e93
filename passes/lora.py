"""LoRA and QLoRA adapters as graph passes (book section 8.3; Hu et al. 2021, Dettmers et al. 2023).

``add_lora`` gives chosen linear weights W (C, D) a low-rank correction ``W + (alpha/rank)·B·A``
with A (rank, D) and B (C, rank) new trainable float parameters ``<W>.lora_A`` / ``<W>.lora_B``;
every existing parameter is frozen. It is inserted in the cheap form, next to the untouched base
op: ``y = x @ Wᵀ + ((x @ Aᵀ) @ Bᵀ) · s`` (never materialising B·A). A starts Gaussian with std
1/rank (peft's ``init_lora_weights="gaussian"``; ``init="kaiming"`` gives peft's default
U(±1/sqrt(D))) and B starts at zero, so a fresh adapter computes exactly the base model.
Adapter nodes take the scope of the node they adapt and the origin ``lora:adapter``.
``merge_lora`` folds s·B·A into W and removes every adapter node: the inference graph then has
the base graph's nodes, names and parameters. On a base quantised by
``passes.quant.quantize_weights`` (Q4_0 / Q4_1 / Q8_0 ``matmul_nbits`` or int8
``dequantize_linear`` weights) the adapters sit beside the frozen quantised op: QLoRA.

Workflow (fit() trains Modules; LoRA works on the traced graph)::

    fwd = trace(lambda idx, y: {"loss": F.cross_entropy(...)}, specs, module=model)
    lora = add_lora(fwd, rank=8, alpha=16).graph      # or quantize_weights(fwd, "q4_0") first
    step = make_train_step(lora, Adam(1e-3))           # only the A / B are trained
    runner = NumpyStepRunner(step.graph, step.info.state, step.initial_state)
    for batch in batches: runner.step(batch)
    lora = lora.with_params({n: runner.state()[n] for n in step.info.params})
    save_adapters(lora, "task.safetensors")            # A / B only, with the base fingerprint
    served = merge_lora(lora).graph                    # the base structure, merged weights

Targets are parameter names or ``fnmatch`` patterns; the default :data:`ATTENTION_TARGETS`
covers the attention projections (``MultiheadAttention``'s ``in_proj_weight`` / ``q_proj_weight``
..., ``out_proj.weight``, and any ``*attn.*.weight`` matrix). A weight is adaptable when every
use is ``matmul(x, transpose(W))`` (``F.linear``), possibly through a row ``slice`` (the stacked
projection of cross-attention), ``matmul(x, W)`` with W (D, C), a ``linear`` node without fused
activation, or a quantised ``matmul_nbits`` / ``dequantize_linear`` weight.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.errors import CheckpointError, GraphError, LbdlError, OpError, ShapeError
from lbdl_graph.graph import Graph, Node, Param, Value
from lbdl_graph.verify import verify

from .base import PassResult

__all__ = ["ATTENTION_TARGETS", "FORMAT", "add_lora", "base_weights", "load_adapters",
           "merge_lora", "save_adapters"]

ATTENTION_TARGETS = ("*in_proj_weight", "*q_proj_weight", "*k_proj_weight", "*v_proj_weight",
                     "*q_proj.weight", "*k_proj.weight", "*v_proj.weight", "*out_proj.weight",
                     "*attn.*.weight")
FORMAT = "lbdl-graph-lora/1"
ORIGIN = "lora:adapter"  # Node.origin of the adapter nodes
_QUANTISED = ("nbits", "dq")  # layouts of quantised base weights


@dataclass(frozen=True)
class _Use:
    """A node computing ``x @ W'ᵀ`` for a (row slice of a) base weight W."""

    node: Node
    weight: str
    layout: str  # "nk": W (C, D) via transpose; "kn": W (D, C); "nbits" / "dq": quantised
    shape: tuple[int, int]  # (out C, in D) of the whole weight
    rows: tuple[int, int] | None = None  # W[r0:r1] when the use reads a row slice
    chain: tuple[Node, ...] = ()  # slice / transpose / dequantize nodes between W and node
    bad: str = ""  # why this use cannot take an adapter


def _quant_name(p: Param) -> str:
    return p.name[:-2] if p.name.endswith(".q") else p.name


def _float_matrix(p: Param | None) -> bool:
    return p is not None and p.data.ndim == 2 and p.data.dtype.kind == "f"


def _weight_of(g: Graph, v: Value | None) -> tuple[Param, str, tuple[int, int] | None,
                                                  tuple[Node, ...]] | None:
    """The parameter behind a matmul's right operand, its layout, row slice and chain."""
    if v is None or v.ndim != 2:
        return None
    p = g.param_of(v)
    if p is not None:
        return (p, "kn", None, ()) if _float_matrix(p) else None
    t = g.producer(v)
    if t is not None and t.op is ops.dequantize_linear and t.inputs[0] is not None:
        q = g.param_of(t.inputs[0])
        return (q, "dq", None, (t,)) if q is not None else None
    if t is None or t.op is not ops.transpose or t.attrs["perm"] not in (None, (1, 0)):
        return None
    src = t.inputs[0]
    p = g.param_of(src) if src is not None else None
    if p is not None:
        return (p, "nk", None, (t,)) if _float_matrix(p) else None
    s = g.producer(src) if src is not None else None
    if s is None or s.op is not ops.slice_ or s.inputs[0] is None:
        return None
    p = g.param_of(s.inputs[0])
    if not _float_matrix(p) or tuple(s.attrs["axes"] or (0,)) != (0,) \
            or tuple(s.attrs["steps"] or (1,)) != (1,):
        return None
    assert p is not None
    n = p.data.shape[0]
    r0, r1 = (min(max(e + n if e < 0 else e, 0), n) for e in (s.attrs["starts"][0],
                                                              s.attrs["ends"][0]))
    return p, "nk", (r0, r1), (s, t)


def _uses(g: Graph) -> list[_Use]:
    """Every linear-like use of a weight parameter in ``g``."""
    out: list[_Use] = []
    for n in g.nodes:
        if n.op is ops.matmul_nbits:
            p = g.param_of(n.inputs[1]) if n.inputs[1] is not None else None
            if p is not None:
                out.append(_Use(n, _quant_name(p), "nbits", (n.attrs["N"], n.attrs["K"])))
        elif n.op in (ops.matmul, ops.linear):
            found = _weight_of(g, n.inputs[1])
            if found is None or n.inputs[0] is None:
                continue
            p, layout, rows, chain = found
            d, c = n.inputs[1].shape  # type: ignore[union-attr]
            name = _quant_name(p) if layout == "dq" else p.name
            full = (p.data.shape[0], d) if rows else (c, d)
            bad = "" if n.op is ops.matmul or n.attrs["activation"] == "none" else \
                f"a linear node with fused activation {n.attrs['activation']!r}"
            out.append(_Use(n, name, "dq" if layout == "dq" else layout, full, rows, chain, bad))
    return out


def _root(u: _Use) -> Value | None:
    """The parameter value a use starts from."""
    return u.chain[0].inputs[0] if u.chain and u.layout != "nbits" else u.node.inputs[1]


def _dead(g: Graph, n: Node) -> bool:
    return all(not g.consumers.get(o) and o not in g.outputs for o in n.outputs)


def _check_uses(g: Graph, weight: str, uses: list[_Use]) -> None:
    """Every live read of ``weight`` must be one of its linear ``uses``; else OpError naming
    the weight and the first offending node."""
    allowed = {u.node for u in uses} | {c for u in uses for c in u.chain}
    problem: tuple[Node | None, str] | None = next(((u.node, u.bad) for u in uses if u.bad),
                                                   None)
    if uses:
        frontier = {_root(u) for u in uses} | {o for u in uses for c in u.chain
                                               for o in c.outputs}
    else:
        p = g.param_map.get(weight) or g.param_map.get(f"{weight}.q")
        frontier = {p.value} if p is not None else set()
    for v in frontier:
        for c in g.consumers.get(v, ()):  # type: ignore[arg-type]
            if c not in allowed and not _dead(g, c):
                problem = problem or (c, f"{c.op.name} node '{c.name}'")
        if v in g.outputs and problem is None:
            problem = (uses[0].node if uses else None, "a graph output")
    if problem is None and not uses:
        problem = (None, "no node")
    if problem is not None:
        n, why = problem
        raise OpError(f"parameter '{weight}' is not consumed like a linear weight (x @ W.T): "
                      f"it is read by {why}", node=n.name if n else None,
                      op=n.op.name if n else None, source=n.source if n else None,
                      hint="LoRA adapts weights of matmul / linear nodes; apply add_lora before "
                           "fusion passes, or choose other targets")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def _init_a(weight: str, rank: int, d: int, seed: int, init: str, dt: Any) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(weight.encode())])  # order-independent
    if init == "gaussian":
        return (rng.standard_normal((rank, d)) / rank).astype(dt)
    bound = 1.0 / np.sqrt(d)  # kaiming_uniform(a=sqrt(5)), as torch.nn.Linear and peft
    return rng.uniform(-bound, bound, (rank, d)).astype(dt)


def _insert(b: GraphBuilder, u: _Use, a: Value, bb: Value, a_t: dict[str, Value],
            scale: float) -> str:
    """Emit ``u.node`` writing a new base value, then ``y = base + ((x @ Aᵀ) @ Bᵀ) · s``
    writing the node's original output; returns the name of that final add node."""
    node = u.node
    y, x = node.outputs[0], node.inputs[0]
    assert x is not None
    y_base = Value(b.unique_name(f"{y.name}/base"), y.type)
    b.emit(replace(node, outputs=(y_base,)))
    pre = f"{node.name}/lora"

    def emit(op: Any, *ins: Value, name: str, **attrs: Any) -> Value:
        return b.add_node(op, list(ins), attrs, name=f"{pre}/{name}", source=node.source,
                          scope=node.scope, origin=ORIGIN)[0]

    if u.weight not in a_t:  # one Aᵀ per weight, shared by its uses
        a_t[u.weight] = emit(ops.transpose, a, name="A_t", perm=(1, 0))
    h = emit(ops.matmul, x, a_t[u.weight], name="down")
    if u.rows is not None:
        bb = emit(ops.slice_, bb, name="B_rows", starts=(u.rows[0],), ends=(u.rows[1],),
                  axes=(0,))
    up = emit(ops.matmul, h, emit(ops.transpose, bb, name="B_t", perm=(1, 0)), name="up")
    s = emit(ops.constant, name="scale", value=np.asarray(scale, y.dtype.numpy))
    delta = emit(ops.mul, up, s, name="scaled")
    add = Node(ops.add, (y_base, delta), (y,), ops.add.check_attrs({}),
               b.unique_name(f"{pre}/add", "node"), node.source, node.scope, ORIGIN)
    b.emit(add)
    return add.name


def _select(graph: Graph, pats: list[str], default: bool, have: set[str]
            ) -> dict[str, list[_Use]]:
    """The target weights and their uses. Default patterns pick linear weights only; explicit
    ones must each match a parameter (globs: a matrix), and every match must be adaptable."""
    by_weight: dict[str, list[_Use]] = {}
    for u in _uses(graph):
        if _matches(u.weight, pats):
            by_weight.setdefault(u.weight, []).append(u)
    if default and not by_weight:
        raise OpError(f"add_lora: no attention weight of graph '{graph.name}' matches the "
                      f"default targets {list(ATTENTION_TARGETS)}", hint="pass targets=[...]")
    if not default:
        matrices = set(by_weight) | {u.weight for u in _uses(graph)} | {
            p.name for p in graph.params if _float_matrix(p)}
        names = matrices | {p.name for p in graph.params}
        for pat in pats:
            glob = any(ch in pat for ch in "*?[")
            hit = [n for n in (matrices if glob else names) if _matches(n, [pat])]
            if not hit:
                raise OpError(f"add_lora: target {pat!r} matches no {'matrix ' if glob else ''}"
                              f"parameter of graph '{graph.name}'")
            for n in sorted(set(hit) - set(by_weight)):
                _check_uses(graph, n, [])
    again = sorted(set(by_weight) & have)
    if again:
        raise GraphError(f"add_lora: weight(s) {again} already have a LoRA adapter",
                         hint="merge_lora first, or target other weights")
    return by_weight


def add_lora(graph: Graph, *, targets: Sequence[str] | str | None = None, rank: int = 8,
             alpha: float = 16, seed: int = 0, init: str = "gaussian",
             train: Sequence[str] = ()) -> PassResult:
    """Insert LoRA adapters on the target weights (see the module docstring).

    Args:
        graph: a traced graph (float or weight-quantised base).
        targets: parameter names or fnmatch patterns (default :data:`ATTENTION_TARGETS`, where
            only 2-D parameters count); a target matching nothing, or a weight that is not
            consumed like a linear weight, raises OpError naming it.
        rank, alpha: the adapter rank R and scale alpha; the correction is (alpha/R)·B·A.
        seed: draws A (per weight, independent of the target order).
        init: "gaussian" (std 1/R) or "kaiming" (U(±1/sqrt(D))) for A; B is always zero.
        train: patterns of base parameters that stay trainable (e.g. a new head); all others
            are frozen.

    Returns a PassResult with stats ``adapters``, ``nodes``, ``trainable``, ``frozen``;
    ``graph.metadata["lora"]`` records what :func:`merge_lora` and :func:`save_adapters` need.
    """
    if not isinstance(rank, int | np.integer) or rank < 1:
        raise ShapeError(f"add_lora: rank must be a positive integer, got {rank!r}")
    if init not in ("gaussian", "kaiming"):
        raise OpError(f"add_lora: unknown init {init!r}; use 'gaussian' or 'kaiming'")
    pats = list(ATTENTION_TARGETS if targets is None else
                [targets] if isinstance(targets, str) else targets)
    meta = copy.deepcopy(dict(graph.metadata.get("lora") or {
        "format": FORMAT, "adapters": {}, "uses": [], "frozen": [], "targets": []}))
    by_weight = _select(graph, pats, targets is None, set(meta["adapters"]))
    for w, us in by_weight.items():
        _check_uses(graph, w, us)
        if rank > min(us[0].shape):
            raise ShapeError(f"add_lora: rank {rank} exceeds min(out, in) of weight '{w}' "
                             f"{list(us[0].shape)}")
    uses = [u for us in by_weight.values() for u in us]

    b = GraphBuilder.from_graph(graph, copy_nodes=False)
    adapter_params = {a[k] for a in meta["adapters"].values() for k in ("A", "B")}
    frozen = [p.name for p in b.params if p.trainable and p.name not in adapter_params
              and not _matches(p.name, train)]
    b.params = [Param(p.value, p.data, False) if p.name in frozen else p for p in b.params]
    scale = float(alpha) / int(rank)
    ab: dict[str, tuple[Value, Value]] = {}
    for w, us in by_weight.items():
        dt = (us[0].node.inputs[0] or us[0].node.outputs[0]).dtype.numpy
        c, d = us[0].shape
        a = b.param(f"{w}.lora_A", _init_a(w, int(rank), d, seed, init, dt))
        ab[w] = (a, b.param(f"{w}.lora_B", np.zeros((c, int(rank)), dt)))
        meta["adapters"][w] = {"A": a.name, "B": ab[w][1].name, "rank": int(rank),
                               "alpha": float(alpha), "scale": scale, "layout": us[0].layout,
                               "shape": [c, d], "init": init}
    by_node = {u.node: u for u in uses}
    a_t: dict[str, Value] = {}
    count = 0
    for node in graph.nodes:
        u = by_node.get(node)
        if u is None:
            b.emit(node)
            continue
        start = len(b.nodes)
        add = _insert(b, u, *ab[u.weight], a_t, scale)
        meta["uses"].append({"weight": u.weight, "node": node.name, "add": add,
                             "nodes": [n.name for n in b.nodes[start + 1:]]})
        count += len(b.nodes) - start - 1
    meta["frozen"] = [*meta["frozen"], *frozen]
    meta["targets"] = [*meta["targets"], *(p for p in pats if p not in meta["targets"])]
    b.metadata = {**b.metadata, "lora": meta}
    new = b.build(list(graph.outputs))
    return PassResult(new, True, {"adapters": len(ab), "nodes": count,
                                  "trainable": new.num_params(True),
                                  "frozen": new.num_params(False)})


def _lora_meta(graph: Graph, what: str) -> dict[str, Any]:
    meta = graph.metadata.get("lora")
    if not meta or not meta.get("adapters"):
        raise GraphError(f"{what}: graph '{graph.name}' has no LoRA adapters (run add_lora)")
    return dict(meta)


def merge_lora(graph: Graph) -> PassResult:
    """Fold every adapter into its weight (W + s·B·A) and remove the adapter nodes and
    parameters; base parameters get back their trainable flags. A graph without adapters is
    returned unchanged. Adapters on a quantised base raise OpError (merging would requantise)."""
    meta = graph.metadata.get("lora")
    if not meta or not meta.get("adapters"):
        return PassResult(graph, False, {"adapters": 0, "nodes": 0})
    adapters = meta["adapters"]
    quant = sorted(w for w, a in adapters.items() if a["layout"] in _QUANTISED)
    if quant:
        raise OpError(f"merge_lora: base weight(s) {quant} are quantised; folding B·A into them "
                      "would requantise", hint="serve the adapter graph as it is, or merge the "
                      "adapters (load_adapters) into the float base model")
    drop = {n for u in meta["uses"] for n in (*u["nodes"], u["add"])}
    missing = sorted(drop - set(graph.node_map))
    if missing:
        raise GraphError(f"merge_lora: adapter node(s) {missing[:5]} are missing from graph "
                         f"'{graph.name}' (was it rewritten after add_lora?)")
    restore = {u["node"]: graph.node_map[u["add"]].outputs[0] for u in meta["uses"]}
    nodes = []
    for n in graph.nodes:
        if n.name in drop:
            continue
        if n.name in restore:
            readers = graph.consumers.get(n.outputs[0], ())
            if [r.name for r in readers] != [next(u["add"] for u in meta["uses"]
                                                  if u["node"] == n.name)]:
                raise GraphError(f"merge_lora: the base output of '{n.name}' is read outside "
                                 "its adapter", node=n.name, op=n.op.name, source=n.source)
            n = replace(n, outputs=(restore[n.name],))
        nodes.append(n)
    pm = graph.param_map
    merged: dict[str, np.ndarray] = {}
    for w, a in adapters.items():
        delta = a["scale"] * (pm[a["B"]].data.astype(np.float64)
                              @ pm[a["A"]].data.astype(np.float64))
        base = pm[w].data
        merged[w] = (base + (delta if a["layout"] == "nk" else delta.T)).astype(base.dtype)
    gone = {a[k] for a in adapters.values() for k in ("A", "B")}
    back = set(meta["frozen"])
    params = [Param(p.value, merged.get(p.name, p.data), p.trainable or p.name in back)
              for p in graph.params if p.name not in gone]
    md = {k: v for k, v in graph.metadata.items() if k != "lora"}
    new = graph.replace(nodes=nodes, params=params, metadata=md)
    verify(new)
    return PassResult(new, True, {"adapters": len(adapters), "nodes": len(drop)})


# ---------------------------------------------------------------- adapter files


def base_weights(graph: Graph) -> dict[str, list[int]]:
    """The base model's parameter names and shapes, without adapters; a quantised weight counts
    under its original name and float shape (from ``metadata["quantization"]``), so a QLoRA
    graph and its float base have the same base."""
    lora = graph.metadata.get("lora") or {}
    skip = {a[k] for a in lora.get("adapters", {}).values() for k in ("A", "B")}
    qw = (graph.metadata.get("quantization") or {}).get("weights", {})
    out = {w: list(r["shape"]) for w, r in qw.items()}
    for p in graph.params:
        if p.name not in skip and not any(p.name.startswith(f"{w}.") for w in qw):
            out[p.name] = list(p.data.shape)
    return dict(sorted(out.items()))


def _fingerprint(weights: Mapping[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(sorted(weights.items())).encode()).hexdigest()


def save_adapters(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write only the adapters (A and B) of ``graph`` to a safetensors file, with metadata:
    rank, alpha, targets, per-adapter records and a fingerprint of the base weights."""
    from safetensors.numpy import save

    meta = _lora_meta(graph, "save_adapters")
    pm = graph.param_map
    tensors = {a[k]: np.ascontiguousarray(pm[a[k]].data) for a in meta["adapters"].values()
               for k in ("A", "B")}
    base = base_weights(graph)
    ranks = sorted({a["rank"] for a in meta["adapters"].values()})
    alphas = sorted({a["alpha"] for a in meta["adapters"].values()})
    header = {"format": FORMAT, "rank": json.dumps(ranks[0] if len(ranks) == 1 else ranks),
              "alpha": json.dumps(alphas[0] if len(alphas) == 1 else alphas),
              "targets": json.dumps(meta["targets"]), "adapters": json.dumps(meta["adapters"]),
              "base_fingerprint": _fingerprint(base), "base_weights": json.dumps(base)}
    path = Path(path)
    try:
        path.write_bytes(save(tensors, metadata=header))
    except OSError as e:
        raise CheckpointError(f"cannot write adapters {path}: {e.strerror or e}") from None
    return path


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise CheckpointError(f"no adapter file {path}") from None
    except Exception as e:  # safetensors raises its own errors for damaged files
        raise CheckpointError(f"cannot read adapter file {path}: {e}") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a LoRA adapter file (format "
                              f"{header.get('format')!r}, expected {FORMAT!r})")
    return tensors, header


def _base_mismatch(want: Mapping[str, list[int]], have: Mapping[str, list[int]]) -> str:
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [f"{n}: {want[n]} vs {have[n]}" for n in sorted(set(want) & set(have))
              if list(want[n]) != list(have[n])]
    parts = [f"{what} {items[:5]}{' ...' if len(items) > 5 else ''}" for what, items in
             (("missing from the graph:", missing), ("not in the adapters' base:", extra),
              ("shape (adapters' base vs graph):", shapes)) if items]
    return "; ".join(parts)


def load_adapters(graph: Graph, path: str | os.PathLike[str]) -> Graph:
    """``graph`` with the adapters of ``path``: a base graph gets them inserted (as
    :func:`add_lora` with the stored targets, ranks and alphas); a graph that already has the
    same adapters gets their values. Adapters for another base raise CheckpointError naming the
    mismatching weights."""
    path = Path(path)
    tensors, header = _read(path)
    try:
        adapters: dict[str, dict[str, Any]] = json.loads(header["adapters"])
        stored = json.loads(header["base_weights"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged adapter metadata ({e})") from None
    have = base_weights(graph)
    if header.get("base_fingerprint") != _fingerprint(have):
        raise CheckpointError(f"adapters {path} were trained for a different base model than "
                              f"graph '{graph.name}': {_base_mismatch(stored, have)}")
    current = (graph.metadata.get("lora") or {}).get("adapters", {})
    if not current:
        groups: dict[tuple[int, float, str], list[str]] = {}
        for w, a in adapters.items():
            groups.setdefault((a["rank"], a["alpha"], a["init"]), []).append(w)
        for (rank, alpha, init), names in groups.items():
            graph = add_lora(graph, targets=names, rank=rank, alpha=alpha, init=init).graph
        current = graph.metadata["lora"]["adapters"]
    diff = sorted(w for w in set(adapters) | set(current) if w not in adapters or w not in current
                  or (adapters[w]["rank"], adapters[w]["alpha"]) != (current[w]["rank"],
                                                                     current[w]["alpha"]))
    if diff:
        raise CheckpointError(f"adapters {path} do not fit the adapters of graph "
                              f"'{graph.name}': weights {diff} differ (missing, or other rank "
                              "or alpha)")
    found = {current[w][k]: tensors.get(adapters[w][k]) for w in adapters for k in ("A", "B")}
    absent = sorted(n for n, v in found.items() if v is None)
    if absent:
        raise CheckpointError(f"adapter file {path} lacks tensors {absent}")
    arrays = {n: v for n, v in found.items() if v is not None}
    try:
        return graph.with_params(arrays)
    except LbdlError as e:
        raise CheckpointError(f"adapters {path}: {e.message}") from None
