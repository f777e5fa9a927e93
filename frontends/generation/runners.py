"""Step runners: what ``generate`` drives. Each one holds the state of one batch of sequences.

``start(ids, mask)`` runs the prompt and returns the last position's logits (N, V);
``step(ids, mask)`` feeds one token per row (N, 1) with the mask of the whole sequence so far
(N, P+1) and returns the next logits. :class:`KVRunner` keeps the K/V cache between steps (on
NumPy, or on ONNX Runtime where IOBinding leaves the cache in ORT's memory, on the device under
CUDA); :class:`RecomputeRunner` runs the whole sequence again at every step (the baseline).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lbdl_graph.errors import GenerationError
from lbdl_graph.graph import Graph

from .graphs import IDS, LOGITS, MASK, GenerationGraphs, key_name

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


def _nbytes(v: Any) -> int:
    if isinstance(v, np.ndarray):
        return int(v.nbytes)
    return int(np.prod(v.shape())) * _ORT_BYTES.get(v.data_type(), 4)


class KVRunner:
    """Prefill once, then one decode step per token with the cache carried between them."""

    def __init__(self, prefill: _Exec, decode: _Exec, vocab_size: int, context: int | None,
                 name: str = "kv") -> None:
        self.prefill, self.decode = prefill, decode
        self.vocab_size, self.context, self.name = vocab_size, context, name
        self._state: dict[str, Any] = {}

    @classmethod
    def numpy(cls, graphs: GenerationGraphs) -> KVRunner:
        """On the NumPy interpreter."""
        return cls(_numpy_exec(graphs.prefill), _numpy_exec(graphs.decode), graphs.vocab_size,
                   graphs.context, "numpy-kv")

    def _keep(self, out: dict[str, Any]) -> np.ndarray:
        self._state = {key_name(k): v for k, v in out.items() if k != LOGITS}
        return np.asarray(out[LOGITS])[:, -1].astype(np.float32, copy=False)

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Run the prompt (N, T); returns the logits of its last position (N, V)."""
        return self._keep(self.prefill({IDS: ids, MASK: mask}))

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Feed one token per row (N, 1); ``mask`` (N, P+1) covers the whole sequence."""
        if not self._state:
            raise GenerationError("KVRunner.step before start: run the prompt first")
        return self._keep(self.decode({IDS: ids, MASK: mask, **self._state}))

    def cache_bytes(self) -> int:
        """Bytes of the K/V cache held now."""
        return sum(_nbytes(v) for v in self._state.values())


def ort_kv_runner(prefill: Graph | str | os.PathLike[str] | Any,
                  decode: Graph | str | os.PathLike[str] | Any, vocab_size: int,
                  context: int | None, *, threads: int | None = None, providers: Any = None,
                  io_binding: bool = True) -> KVRunner:
    """A :class:`KVRunner` on ONNX Runtime; prefill/decode are Graphs, ModelProtos or paths."""
    srcs = [str(p) if isinstance(p, Path) else p for p in (prefill, decode)]
    pre = _OrtExec(srcs[0], threads=threads, providers=providers, io_binding=io_binding)
    dec = _OrtExec(srcs[1], threads=threads, providers=providers, io_binding=io_binding)
    return KVRunner(pre, dec, vocab_size, context, "onnxruntime-kv")


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
