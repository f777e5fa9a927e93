"""Activation calibration for static quantisation: observers and range selection.

The graph is run on the calibration batches by a caller-supplied ``evaluate(graph, feeds)``
(passes do not depend on a backend; ``Interpreter(g).run`` or an ``OrtRunner`` both fit), with
the values to observe added as outputs. Three ways to pick each tensor's range:

- ``minmax``: the smallest and largest value seen;
- ``percentile``: the (100 - p)/2 and (100 + p)/2 percentiles of a histogram of the values
  (ONNX Runtime's non-symmetric percentile calibrator), which ignores rare outliers;
- ``entropy``: TensorRT's KL-divergence calibration: a histogram of |x| (2048 bins) is cut at
  every candidate threshold i >= 128 bins, the clipped distribution P (outliers folded into its
  last bin) is compared with its 128-level quantisation Q, and the threshold with the smallest
  KL(P || Q) wins; the range is [-T, T] clipped to the observed range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lbdl_graph.errors import InputError, OpError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.shapes import fmt_shape

__all__ = ["METHODS", "Evaluate", "Observer", "calibrate", "check_batches",
           "entropy_threshold", "percentile_range"]

Evaluate = Callable[[Graph, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
Batches = Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]]
METHODS = ("minmax", "percentile", "entropy")


def check_batches(graph: Graph, data: Batches) -> list[dict[str, np.ndarray]]:
    """The calibration data as a list of feeds, each checked against the graph inputs: names,
    dtypes, ranks and static dims; symbolic dims must agree within a batch. Errors name the
    batch, the input, the expected type and the shape found."""
    batches = [data] if isinstance(data, Mapping) else list(data)
    if not batches:
        raise InputError(f"no calibration batches for graph '{graph.name}'")
    out = []
    for i, feeds in enumerate(batches):
        if not isinstance(feeds, Mapping):
            raise InputError(f"calibration batch {i} is a {type(feeds).__name__}, not a mapping "
                             "from input names to arrays")
        for v in graph.inputs:
            if v.name not in feeds:
                raise InputError(f"calibration batch {i}: missing input '{v.name}' ({v.type}); "
                                 f"got {sorted(feeds)}")
        unknown = sorted(set(feeds) - {v.name for v in graph.inputs})
        if unknown:
            raise InputError(f"calibration batch {i}: unknown input(s) {unknown}; graph "
                             f"'{graph.name}' takes {[v.name for v in graph.inputs]}")
        dims: dict[str, int] = {}
        checked = {}
        for v in graph.inputs:
            arr = np.asarray(feeds[v.name])
            ok = arr.dtype == v.dtype.numpy and arr.ndim == v.ndim
            if ok:
                ok = all(d == n if isinstance(d, int) else dims.setdefault(d, n) == n
                         for d, n in zip(v.shape, arr.shape, strict=True))
            if not ok:
                raise InputError(f"calibration batch {i}: input '{v.name}' expects {v.type}, "
                                 f"got {arr.dtype.name}{fmt_shape(arr.shape)}")
            checked[v.name] = arr
        out.append(checked)
    return out


@dataclass
class Observer:
    """Statistics of one tensor over the calibration batches: its range and, in a second pass,
    a histogram of its values over [-A, A] with A = max |x| (2 * ``bins`` bins)."""

    bins: int = 2048
    lo: float = np.inf
    hi: float = -np.inf
    hist: np.ndarray | None = field(default=None, repr=False)

    @property
    def amax(self) -> float:
        """The largest magnitude seen."""
        return max(abs(self.lo), abs(self.hi), 0.0)

    def update_range(self, x: np.ndarray) -> None:
        """First pass: widen [lo, hi] to cover ``x`` (NaNs are ignored)."""
        x = x[np.isfinite(x)]
        if x.size:
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def update_hist(self, x: np.ndarray) -> None:
        """Second pass: add ``x`` to the histogram (the range is fixed by the first pass)."""
        a = self.amax or 1.0
        h, _ = np.histogram(x[np.isfinite(x)], bins=2 * self.bins, range=(-a, a))
        self.hist = h if self.hist is None else self.hist + h

    def edges(self) -> np.ndarray:
        """The histogram's bin edges."""
        a = self.amax or 1.0
        return np.linspace(-a, a, 2 * self.bins + 1)


def percentile_range(obs: Observer, percentile: float) -> tuple[float, float]:
    """The central ``percentile`` % of the values (cut evenly from both tails)."""
    assert obs.hist is not None
    cdf = np.cumsum(obs.hist) / max(int(obs.hist.sum()), 1)
    cut = (100.0 - percentile) / 200.0
    edges = obs.edges()
    lo = edges[min(int(np.searchsorted(cdf, cut)), len(edges) - 1)]
    hi = edges[min(int(np.searchsorted(cdf, 1.0 - cut)) + 1, len(edges) - 1)]
    return max(float(lo), obs.lo), min(float(hi), obs.hi)


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give empty bins a little mass taken from the others (MXNet / ORT smoothing)."""
    zero = p == 0
    nz = int((~zero).sum())
    if nz == 0 or nz == p.size:
        return p
    take = eps * zero.sum() / nz
    return np.where(zero, eps, p - take)


def entropy_threshold(hist: np.ndarray, width: float, levels: int = 128) -> float:
    """TensorRT's KL calibration on a histogram of |x| whose bins are ``width`` wide: the cut
    T = i * width (the first i bins kept, i >= ``levels``) minimising KL(P || Q)."""
    hist = hist.astype(np.float64)
    n = hist.size
    if n <= levels or hist.sum() == 0:
        return n * width
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        starts = (np.arange(levels) * i) // levels
        lengths = np.diff(np.append(starts, i))
        nonzero = p != 0
        sums = np.add.reduceat(hist[:i], starts)
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        q = np.repeat(np.divide(sums, counts, out=np.zeros(levels), where=counts > 0), lengths)
        q = np.where(nonzero, q, 0.0)
        if q.sum() == 0:
            continue
        ps, qs = _smooth(p), _smooth(q)  # on counts, as MXNet / ONNX Runtime
        ps, qs = ps / ps.sum(), qs / qs.sum()
        mask = ps > 0
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i * width


def _entropy_range(obs: Observer, levels: int = 128) -> tuple[float, float]:
    assert obs.hist is not None
    b = obs.bins
    folded = obs.hist[b:] + obs.hist[:b][::-1]  # histogram of |x|
    t = entropy_threshold(folded, (obs.amax or 1.0) / b, levels)
    return max(-t, obs.lo), min(t, obs.hi)


def calibrate(graph: Graph, values: Sequence[Value], data: Batches, evaluate: Evaluate, *,
              method: str = "minmax", percentile: float = 99.99,
              bins: int = 2048) -> dict[str, tuple[float, float]]:
    """The calibrated (lo, hi) range of each value in ``values`` (by name).

    ``evaluate(graph, feeds)`` must return the graph's outputs by name; the values are made
    outputs of a copy of ``graph`` for that. Histogram methods run the data twice.
    """
    if method not in METHODS:
        raise OpError(f"unknown calibration method {method!r}; use one of {METHODS}")
    if not 0.0 < percentile <= 100.0:
        raise OpError(f"percentile must be in (0, 100], got {percentile}")
    batches = check_batches(graph, data)
    inputs = {v.name for v in graph.inputs}
    extra = [v for v in dict.fromkeys(values) if v.name not in inputs and v not in graph.outputs]
    probe = graph.replace(outputs=[*graph.outputs, *extra])
    obs = {v.name: Observer(bins) for v in values}

    def run(feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        got = evaluate(probe, feeds)
        return {name: np.asarray(feeds[name] if name in inputs else got[name],
                                 dtype=np.float64) for name in obs}

    for feeds in batches:
        for name, arr in run(feeds).items():
            obs[name].update_range(arr)
    if method != "minmax":
        for feeds in batches:
            for name, arr in run(feeds).items():
                obs[name].update_hist(arr)
    out = {}
    for name, o in obs.items():
        if not np.isfinite(o.lo):  # nothing finite was seen
            out[name] = (0.0, 0.0)
        elif method == "minmax":
            out[name] = (o.lo, o.hi)
        elif method == "percentile":
            out[name] = percentile_range(o, percentile)
        else:
            out[name] = _entropy_range(o)
    return out
