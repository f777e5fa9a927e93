"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["interleaved"]


def interleaved(fns: Mapping[str, Callable[[], Any]], repeat: int, warmup: int = 3
                ) -> dict[str, float]:
    """Median seconds per call of each function, the functions called in turn each round, so
    that load from other processes hits every competitor alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}

