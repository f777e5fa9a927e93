"""Weight initialisation, drawn from one seeded global generator.

The formulas are PyTorch's defaults (``torch.nn.init``); the random bits come from NumPy, so a
model is reproducible after :func:`manual_seed` but not bit-identical to a torch model. The
``*_`` functions fill a Parameter (or array) in place and return it, as in torch.

Arrays larger than ``_CHUNK`` elements (1 MiB of float32: every GPT-2 weight matrix, ResNet-50's
bigger convolutions) are drawn in chunks on a thread pool: one seed is taken from the global
generator and chunk ``i`` draws from an SFC64 generator seeded with ``SeedSequence(seed,
spawn_key=(i,))`` (9% faster than PCG64 here), so the values do not depend on the thread count.
Normal chunks use the Box–Muller transform (:mod:`._box_muller`, about twice as fast as NumPy's
ziggurat); each chunk is scaled while it is still in cache. Smaller arrays draw straight from
the global generator. Inside :func:`skip_random` the random fills do nothing (the zeros of
:func:`empty` stay): a model that redraws every weight in its own scheme (GPT-2's) builds its
layers there and draws each weight once.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from lbdl_graph.errors import OpError, ShapeError

from ._box_muller import standard_normal_into

__all__ = [
    "calculate_fan_in_and_fan_out",
    "calculate_gain",
    "constant_",
    "generator",
    "kaiming_normal_",
    "kaiming_uniform_",
    "manual_seed",
    "normal_",
    "ones_",
    "skip_random",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

_GEN: list[np.random.Generator] = [np.random.default_rng(0)]
_SKIP = [0]
_CHUNK = 1 << 18  # elements per parallel draw (1 MiB of float32, fits in L2)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator that every layer draws its initial weights from."""
    _GEN[0] = np.random.default_rng(int(seed))
    return _GEN[0]


def generator() -> np.random.Generator:
    """The global generator."""
    return _GEN[0]


def _target(x: Any) -> np.ndarray:
    arr = x if isinstance(x, np.ndarray) else getattr(x, "data", x)
    if not isinstance(arr, np.ndarray):
        raise OpError(f"init functions fill a Parameter or an ndarray, got {type(x).__name__}")
    return arr


def _fill(x: Any, values: np.ndarray) -> Any:
    arr = _target(x)
    arr[...] = values.astype(arr.dtype, copy=False)
    return x


def calculate_fan_in_and_fan_out(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight as torch computes them: dims 1 and 0 times the
    receptive field (so a ConvTranspose weight's fan_in is out_channels/groups * kernel)."""
    if len(shape) < 2:
        raise ShapeError(f"fan in/out need a weight with at least 2 dims, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (torch.nn.init.calculate_gain)."""
    if nonlinearity in ("linear", "sigmoid", "identity") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise OpError(f"unsupported nonlinearity {nonlinearity!r}")


@contextmanager
def skip_random() -> Iterator[None]:
    """Within this block, ``uniform_``/``normal_`` (and the inits built on them) leave their
    target untouched; the caller promises to draw every weight afterwards."""
    _SKIP[0] += 1
    try:
        yield
    finally:
        _SKIP[0] -= 1


def _in_place(arr: np.ndarray) -> bool:
    """Whether the generator can draw straight into ``arr`` (contiguous float32/float64): no
    float64 temporary, about 4x faster for the 124M weights of GPT-2."""
    return arr.dtype in (np.float32, np.float64) and arr.flags.c_contiguous and arr.size > 0


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_POOLS: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads, started once (under load a thread start can take
    milliseconds, and GPT-2 draws 50 arrays)."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="lbdl-init")
    return pool


def _affine(part: np.ndarray, scale: float, shift: float) -> None:
    """``part = scale * part + shift`` in place, skipping the no-op steps."""
    if scale != 1.0:
        part *= scale
    if shift != 0.0:
        part += shift


def _draw(arr: np.ndarray, normal: bool, scale: float, shift: float) -> None:
    """Fill contiguous float ``arr`` with ``scale * X + shift``, X ~ N(0, 1) or U[0, 1)."""
    if arr.size <= _CHUNK:
        gen = generator()
        (gen.standard_normal if normal else gen.random)(dtype=arr.dtype, out=arr)
        _affine(arr, scale, shift)
        return
    seed = int(generator().integers(1 << 63))
    flat = arr.reshape(-1)

    def fill(i: int) -> None:
        part = flat[i * _CHUNK:(i + 1) * _CHUNK]
        gen = np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed, spawn_key=(i,))))
        if normal:
            standard_normal_into(gen, part)
        else:
            gen.random(dtype=arr.dtype, out=part)
        _affine(part, scale, shift)

    list(_pool(_workers()).map(fill, range(-(-flat.size // _CHUNK))))


def uniform_(x: Any, a: float = 0.0, b: float = 1.0) -> Any:
    """Fill with U(a, b)."""
    if _SKIP[0]:
        return x
    arr = _target(x)
    if not _in_place(arr):
        return _fill(x, generator().uniform(a, b, size=arr.shape))
    _draw(arr, False, b - a, a)
    return x


def normal_(x: Any, mean: float = 0.0, std: float = 1.0) -> Any:
    """Fill with N(mean, std²)."""
    if _SKIP[0]:
        return x
    arr = _target(x)
    if not _in_place(arr):
        return _fill(x, generator().normal(mean, std, size=arr.shape))
    _draw(arr, True, std, mean)
    return x


def constant_(x: Any, value: float) -> Any:
    """Fill with a constant."""
    return _fill(x, np.full(_target(x).shape, value))


def zeros_(x: Any) -> Any:
    """Fill with zeros."""
    return constant_(x, 0.0)


def ones_(x: Any) -> Any:
    """Fill with ones."""
    return constant_(x, 1.0)


def _fan(shape: Sequence[int], mode: str) -> int:
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise OpError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def kaiming_uniform_(x: Any, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu") -> Any:
    """He uniform: U(±gain·sqrt(3/fan)). ``a=sqrt(5)`` gives Linear/Conv's U(±1/sqrt(fan_in))."""
    shape = _target(x).shape
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(x, -bound, bound)


def kaiming_normal_(x: Any, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Any:
    """He normal: N(0, gain²/fan)."""
    shape = _target(x).shape
    return normal_(x, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode)))


def xavier_uniform_(x: Any, gain: float = 1.0) -> Any:
    """Glorot uniform: U(±gain·sqrt(6/(fan_in+fan_out)))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(_target(x).shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(x, -bound, bound)


def xavier_normal_(x: Any, gain: float = 1.0) -> Any:
    """Glorot normal: N(0, gain²·2/(fan_in+fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(_target(x).shape)
    return normal_(x, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _hugepage_switch() -> Callable[[bool], bool] | None:
    """NumPy's switch for the ``madvise(MADV_HUGEPAGE)`` hint on big allocations (private
    API, absent on some platforms and versions: then None)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - NumPy 1.x
        return None
    switch = getattr(multiarray, "_set_madvise_hugepage", None)
    return switch if callable(switch) else None


_HUGEPAGE = _hugepage_switch()
_HUGEPAGE_LOCK = threading.Lock()
_HINTED_BYTES = 1 << 22  # NumPy only hints allocations of at least 4 MiB


def empty(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    """A zero-filled array to be initialised (NumPy has no uninitialised allocation we want).

    Weights are allocated without NumPy's transparent-huge-page hint: where the kernel
    compacts memory synchronously for hinted regions (``defrag=madvise``, the default), the
    first write into GPT-2's 500 MB of fresh weights spent 0.5-0.8 s of system time on the
    loaded project machine, against 0.16-0.24 s with ordinary pages.
    """
    dt = np.dtype(dtype)
    if _HUGEPAGE is None or math.prod(shape) * dt.itemsize < _HINTED_BYTES:
        return np.zeros(shape, dtype=dt)
    with _HUGEPAGE_LOCK:
        previous = _HUGEPAGE(False)
        try:
            return np.zeros(shape, dtype=dt)
        finally:
            _HUGEPAGE(previous)
