"""Step runners: what ``generate`` drives. Each one holds the state of one batch of sequences.

``start(ids, mask)`` runs the prompt and returns the last position's logits (N, V);
``step(ids, mask)`` feeds one token per row (N, 1) with the mask of the whole sequence so far
(N, P+1) and returns the next logits. :class:`KVRunner` keeps the K/V cache between steps (on
NumPy, or on ONNX Runtime where IOBinding leaves the cache in ORT's memory, on the device under
CUDA); :class:`RecomputeRunner` runs the whole sequence again at every step (the baseline).

With a shared cache (graphs traced with ``shared_cache=True``) :class:`KVRunner` copies the
prompt's keys and values once into zeroed buffers of the reserved capacity, and every decode step
writes its new position into them: on ONNX Runtime one IOBinding, made after the prompt, binds
each buffer as both the past input and the present output (GroupQueryAttention writes in place)
and a preallocated logits array, so a step rebinds only ``input_ids`` and ``attention_mask``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lbdl_graph.errors import GenerationError
from lbdl_graph.graph import Graph

from .graphs import IDS, LOGITS, MASK, GenerationGraphs, key_name, present_name

__all__ = ["KVRunner", "RecomputeRunner", "StepRunner", "ort_kv_runner"]

_ORT_BYTES = {"tensor(float)": 4, "tensor(float16)": 2, "tensor(bfloat16)": 2,
              "tensor(double)": 8}


class StepRunner(Protocol):
    """The interface ``generate`` uses."""

    vocab_size: int
    context: int | None

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def cache_bytes(self) -> int: ...


class _Exec(Protocol):
    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...


def _numpy_exec(graph: Graph) -> _Exec:
    from lbdl_graph.backends.numpy.interpreter import Interpreter

    interp = Interpreter(graph, training=False)

    def run(feeds: Mapping[str, Any]) -> dict[str, Any]:
        return interp.run(feeds)

    return run


class _OrtExec:
    """One ORT session run through IOBinding: presents stay ``OrtValue``s, the logits come
    back as a NumPy array."""

    def __init__(self, source: Graph | Any, *, threads: int | None, providers: Any,
                 io_binding: bool) -> None:
        from lbdl_graph.backends.onnx import OrtRunner

        self.runner = OrtRunner(source, providers=providers, intra_op_threads=threads)
        self.session = self.runner.session
        self.outputs = [o.name for o in self.session.get_outputs()]
        # bfloat16 inputs and outputs cross as float32 (ORT's Python binding has no bfloat16)
        self.user_names = [self.runner.output_map.get(o, o) for o in self.outputs]
        self.io_binding = io_binding
        cuda = "CUDAExecutionProvider" in self.runner.providers
        self.device = "cuda" if cuda else "cpu"

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        from lbdl_graph.backends.onnx.runner import translate_error

        try:
            if not self.io_binding:
                outs = self.session.run(self.outputs, dict(feeds))
                return dict(zip(self.user_names, outs, strict=True))
            b = self.session.io_binding()
            for name, v in feeds.items():
                if isinstance(v, np.ndarray):
                    b.bind_cpu_input(name, v)
                else:
                    b.bind_ortvalue_input(name, v)
            for name in self.outputs:
                b.bind_output(name, "cpu" if name == LOGITS else self.device)
            self.session.run_with_iobinding(b)
            vals = b.get_outputs()
        except Exception as e:
            raise translate_error(e, self.runner.nodes, "run") from None
        out: dict[str, Any] = dict(zip(self.user_names, vals, strict=True))
        out[LOGITS] = out[LOGITS].numpy()
        return out


def _present_of(past: str) -> str:
    """``past_key_values.{i}.key`` -> ``present.{i}.key``."""
    _, i, kind = past.split(".")
    return present_name(int(i), kind)


class _OrtSharedExec(_OrtExec):
    """A decode session over shared cache buffers: :meth:`bind_cache` binds them (and the
    logits) once; each call rebinds only the token ids and the mask."""

    def __init__(self, source: Graph | Any, *, threads: int | None, providers: Any) -> None:
        super().__init__(source, threads=threads, providers=providers, io_binding=True)
        if self.device != "cpu":
            raise GenerationError("the shared KV cache runs on ONNX Runtime's CPU provider; use "
                                  "the default (concat) cache on CUDA")
        self._binding: Any = None
        self._logits = np.empty(0, np.float32)
        self._values: list[Any] = []

    def bind_cache(self, buffers: Mapping[str, np.ndarray], vocab: int) -> None:
        """Bind each past buffer as its own present output, and a (N, 1, vocab) logits array."""
        from onnxruntime import OrtValue

        b = self.session.io_binding()
        self._values = []
        for name, buf in buffers.items():
            v = OrtValue.ortvalue_from_numpy(buf)  # shares the array's memory
            b.bind_ortvalue_input(name, v)
            b.bind_ortvalue_output(_present_of(name), v)
            self._values.append(v)
        n = next(iter(buffers.values())).shape[0]
        self._logits = np.empty((n, 1, vocab), np.float32)
        logits = OrtValue.ortvalue_from_numpy(self._logits)
        b.bind_ortvalue_output(LOGITS, logits)
        self._values.append(logits)
        self._binding = b

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        from lbdl_graph.backends.onnx.runner import translate_error

        b = self._binding
        if b is None:
            raise GenerationError("shared KV cache: decode before the buffers were bound")
        try:
            b.bind_cpu_input(IDS, np.ascontiguousarray(feeds[IDS]))
            b.bind_cpu_input(MASK, np.ascontiguousarray(feeds[MASK]))
            self.session.run_with_iobinding(b)
        except Exception as e:
            raise translate_error(e, self.runner.nodes, "run") from None
        return {LOGITS: self._logits.copy()}  # the bound array is overwritten by the next step


def _nbytes(v: Any) -> int:
    if isinstance(v, np.ndarray):
        return int(v.nbytes)
    return int(np.prod(v.shape())) * _ORT_BYTES.get(v.data_type(), 4)


class KVRunner:
    """Prefill once, then one decode step per token with the cache carried between them.

    ``shared``: the decode graph takes cache buffers it writes into (``shared_cache=True``);
    :meth:`reserve` sets their capacity (default: the context)."""

    def __init__(self, prefill: _Exec, decode: _Exec, vocab_size: int, context: int | None,
                 name: str = "kv", *, shared: bool = False) -> None:
        self.prefill, self.decode = prefill, decode
        self.vocab_size, self.context, self.name = vocab_size, context, name
        self.shared = shared
        self.capacity: int | None = None
        self._state: dict[str, Any] = {}

    @classmethod
    def numpy(cls, graphs: GenerationGraphs) -> KVRunner:
        """On the NumPy interpreter."""
        return cls(_numpy_exec(graphs.prefill), _numpy_exec(graphs.decode), graphs.vocab_size,
                   graphs.context, "numpy-kv", shared=graphs.shared)

    def reserve(self, length: int) -> None:
        """Shared cache: hold ``length`` positions (prompt + new tokens) from the next start."""
        if self.shared:
            self.capacity = int(length)

    def _keep(self, out: dict[str, Any]) -> np.ndarray:
        self._state = {key_name(k): v for k, v in out.items() if k != LOGITS}
        return np.asarray(out[LOGITS])[:, -1].astype(np.float32, copy=False)

    def _share(self, out: dict[str, Any], length: int) -> np.ndarray:
        """Copy the prompt's presents into zeroed buffers of the capacity and bind them."""
        cap = self.capacity or self.context
        if cap is None or cap < length:
            raise GenerationError(f"shared KV cache: the capacity {cap} does not hold the "
                                  f"{length}-token prompt", hint="call reserve(prompt + new "
                                  "tokens) first, or give the model a context")
        state = {}
        for k, v in out.items():
            if k == LOGITS:
                continue
            a = v if isinstance(v, np.ndarray) else v.numpy()
            buf = np.zeros((*a.shape[:2], cap, a.shape[3]), a.dtype)
            buf[:, :, :a.shape[2]] = a
            state[key_name(k)] = buf
        self._state = state
        bind = getattr(self.decode, "bind_cache", None)
        if bind is not None:
            bind(state, self.vocab_size)
        return np.asarray(out[LOGITS])[:, -1].astype(np.float32, copy=False)

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Run the prompt (N, T); returns the logits of its last position (N, V)."""
        if self.shared and not np.all(mask):
            raise GenerationError("the shared KV cache takes unpadded prompts only (batch 1 or "
                                  "prompts of one length)", hint="use the default (concat) "
                                  "cache for padded batches")
        out = self.prefill({IDS: ids, MASK: mask})
        return self._share(out, ids.shape[1]) if self.shared else self._keep(out)

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Feed one token per row (N, 1); ``mask`` (N, P+1) covers the whole sequence."""
        if not self._state:
            raise GenerationError("KVRunner.step before start: run the prompt first")
        if not self.shared:
            return self._keep(self.decode({IDS: ids, MASK: mask, **self._state}))
        cap = next(iter(self._state.values())).shape[2]
        if mask.shape[1] > cap:
            raise GenerationError(f"shared KV cache: position {mask.shape[1]} is past the "
                                  f"capacity of {cap}", hint="reserve more positions")
        out = self.decode({IDS: ids, MASK: mask, **self._state})
        self._state.update({key_name(k): v for k, v in out.items() if k != LOGITS})
        return np.asarray(out[LOGITS])[:, -1].astype(np.float32, copy=False)

    def cache_bytes(self) -> int:
        """Bytes of the K/V cache held now (a shared cache's whole buffers)."""
        return sum(_nbytes(v) for v in self._state.values())


def ort_kv_runner(prefill: Graph | str | os.PathLike[str] | Any,
                  decode: Graph | str | os.PathLike[str] | Any, vocab_size: int,
                  context: int | None, *, threads: int | None = None, providers: Any = None,
                  io_binding: bool = True, shared: bool = False) -> KVRunner:
    """A :class:`KVRunner` on ONNX Runtime; prefill/decode are Graphs, ModelProtos or paths.

    ``shared``: the decode graph has a shared cache (``shared_cache=True``): one IOBinding
    over its buffers, CPU only."""
    srcs = [str(p) if isinstance(p, Path) else p for p in (prefill, decode)]
    pre = _OrtExec(srcs[0], threads=threads, providers=providers, io_binding=io_binding)
    dec = (_OrtSharedExec(srcs[1], threads=threads, providers=providers) if shared else
           _OrtExec(srcs[1], threads=threads, providers=providers, io_binding=io_binding))
    return KVRunner(pre, dec, vocab_size, context, "onnxruntime-kv", shared=shared)


class RecomputeRunner:
    """No cache: every step runs the whole sequence through ``graph`` (``input_ids`` and, if
    the graph takes one, ``attention_mask`` -> ``logits``)."""

    def __init__(self, graph: Graph, vocab_size: int, context: int | None, *,
                 backend: str = "numpy", threads: int | None = None) -> None:
        self.vocab_size, self.context = vocab_size, context
        self.takes_mask = any(v.name == MASK for v in graph.inputs)
        if backend == "numpy":
            self._run: _Exec = _numpy_exec(graph)
        else:
            self._run = _OrtExec(graph, threads=threads, providers="cpu", io_binding=False)
        self._ids: np.ndarray | None = None

    def _logits(self, mask: np.ndarray) -> np.ndarray:
        assert self._ids is not None
        feeds: dict[str, Any] = {IDS: self._ids}
        if self.takes_mask:
            feeds[MASK] = mask
        elif not mask.all():
            raise GenerationError("this recompute graph takes no attention_mask: it cannot "
                                  "run padded batches")
        return np.asarray(self._run(feeds)[LOGITS])[:, -1].astype(np.float32, copy=False)

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Run the prompt; returns the last position's logits."""
        self._ids = np.asarray(ids, np.int64)
        return self._logits(mask)

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Append one token per row and run the whole sequence again."""
        if self._ids is None:
            raise GenerationError("RecomputeRunner.step before start: run the prompt first")
        self._ids = np.concatenate([self._ids, np.asarray(ids, np.int64)], 1)
        return self._logits(mask)

    def cache_bytes(self) -> int:
        """No cache."""
        return 0
