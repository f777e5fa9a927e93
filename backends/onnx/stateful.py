"""A stateful ONNX Runtime runner for training loops: state stays in ORT memory (IOBinding).

Each step reads the state tensors from one set of OrtValues and writes their next values into
the other (ping-pong), so parameters, optimizer moments and random keys never cross to the host
between steps; only the batch goes in and the remaining outputs (the loss) come back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import ModelProto, numpy_helper

from lbdl_graph.errors import InputError
from lbdl_graph.graph import Graph

from .runner import (
    HOST_TYPES,
    OrtRunner,
    _np_dtype,
    check_inputs,
    to_host,
    translate_error,
    value_spec,
)

__all__ = ["OrtStatefulRunner"]


class OrtStatefulRunner:
    """Runs a step graph repeatedly with its state kept in ONNX Runtime memory (IOBinding).

    ``state`` maps input names to the outputs holding their next value (``{"w": "w:next"}``).
    State tensors live as OrtValues on the session's device between calls and ping-pong between
    two buffers (step k reads one and writes the other), so only the batch inputs cross from the
    host each step and only the other outputs come back. Graph parameters may be state: the
    graph is exported with its parameters as overridable inputs.

    Args:
        graph_or_model: a Graph, ModelProto or path (see :class:`OrtRunner`).
        state: input name -> output name of its next value.
        init: initial state values (default: the initializer of that name, e.g. a parameter).
        **options: passed to :class:`OrtRunner` (providers, optimization, ...).
    """

    def __init__(self, graph_or_model: Graph | ModelProto | str | os.PathLike[str],
                 state: Mapping[str, str], *, init: Mapping[str, np.ndarray] | None = None,
                 **options: Any) -> None:
        if isinstance(graph_or_model, Graph):
            options.setdefault("params_as_inputs", True)
        self.runner = OrtRunner(graph_or_model, **options)
        model = self.runner.model
        self.state_map = dict(state)
        self.device = "cuda" if "CUDAExecutionProvider" in self.runner.providers else "cpu"
        inputs = {vi.name: vi for vi in model.graph.input}
        outputs = {vi.name: vi for vi in model.graph.output}
        inits = {t.name: t for t in model.graph.initializer}
        init = dict(init or {})
        unknown = sorted(set(init) - set(self.state_map))
        if unknown:
            raise InputError(f"init names {unknown} are not state inputs "
                             f"{sorted(self.state_map)}")
        first: list[Any] = []
        second: list[Any] = []
        for name, out in self.state_map.items():
            if name not in inputs:
                raise InputError(f"state '{name}' is not an input of graph '{self.runner.name}' "
                                 f"(inputs: {sorted(inputs)})")
            if out not in outputs:
                raise InputError(f"state output '{out}' of '{name}' is not an output of graph "
                                 f"'{self.runner.name}' (outputs: {sorted(outputs)})")
            if inputs[name].type != outputs[out].type:
                raise InputError(f"state '{name}' and its next value '{out}' differ in type")
            if inputs[name].type.tensor_type.elem_type in HOST_TYPES:
                raise InputError(f"state '{name}': ONNX Runtime's Python binding cannot hold "
                                 "bfloat16, float8 or int4 tensors; keep the state in float32")
            if name in init:
                arr = np.asarray(init[name])
            elif name in inits:
                arr = numpy_helper.to_array(inits[name])
            else:
                raise InputError(f"state '{name}' needs an initial value (init={{'{name}': ...}})")
            check_inputs([value_spec(inputs[name])], {name: arr}, self.runner.name)
            # a copy: on the CPU an OrtValue wraps the array's memory, which the ping-pong
            # steps overwrite (it may be a caller's array, such as a model parameter)
            arr = np.array(arr, order="C", copy=True)  # keeps 0-d state 0-d
            first.append(ort.OrtValue.ortvalue_from_numpy(arr, self.device, 0))
            second.append(ort.OrtValue.ortvalue_from_shape_and_type(
                arr.shape, arr.dtype, self.device, 0))
        self._buffers = (first, second)
        self._step = 0
        self._batch_specs = [s for s in self.runner.specs if s[0] not in self.state_map]
        self._overridable = [n for n in self.runner.overridable if n not in self.state_map]
        nexts = set(self.state_map.values())
        self._outputs = [(sess, user) for sess, user in self.runner.output_map.items()
                         if user not in nexts]
        self.output_names = [user for _, user in self._outputs]
        # outputs of static shape (the loss, scalar metrics) are written into host OrtValues
        # bound once: fetching ORT-allocated outputs wraps every output, state included
        self._fixed: dict[str, Any] = {}
        for sess, user in self._outputs:
            vi = outputs.get(sess)
            if vi is None or sess != user or vi.type.tensor_type.elem_type in HOST_TYPES:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in vi.type.tensor_type.shape.dim]
            dt = _np_dtype(vi.type.tensor_type.elem_type)
            if dt is not None and dt.kind in "fiub" and None not in dims:
                self._fixed[sess] = ort.OrtValue.ortvalue_from_shape_and_type(dims, dt, "cpu", 0)
        # one IOBinding per step parity with the state bound once (binding costs ~2 us a tensor,
        # noticeable on small models); each entry: (binding, batch input names bound on it)
        self._bindings: list[tuple[Any, frozenset[str]] | None] = [None, None]

    def _binding(self, parity: int, batch: frozenset[str]) -> Any:
        """The IOBinding of steps of ``parity``: state read from one buffer set and written to the
        other. Rebuilt when the batch inputs differ, so none stays bound from an earlier step."""
        cached = self._bindings[parity]
        if cached is not None and cached[1] == batch:
            return cached[0]
        io = self.runner.session.io_binding()
        cur, nxt = self._buffers[parity], self._buffers[1 - parity]
        for (name, out), a, b in zip(self.state_map.items(), cur, nxt, strict=True):
            io.bind_ortvalue_input(name, a)
            io.bind_ortvalue_output(out, b)
        for name, value in self._fixed.items():
            io.bind_ortvalue_output(name, value)
        self._bindings[parity] = (io, batch)
        return io

    @property
    def steps(self) -> int:
        """How many steps have run."""
        return self._step

    def step(self, inputs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run one step on the batch ``inputs``; returns the outputs that are not state."""
        feeds = check_inputs(self._batch_specs, inputs or {}, self.runner.name, self._overridable)
        io = self._binding(self._step % 2, frozenset(feeds))
        for name, arr in feeds.items():  # rebinding a name replaces the earlier array
            io.bind_cpu_input(name, to_host(arr))
        dynamic = [sess for sess, _ in self._outputs if sess not in self._fixed]
        for sess in dynamic:  # fresh host outputs each step (their shapes may change)
            io.bind_output(sess, "cpu")
        try:
            self.runner.session.run_with_iobinding(io)
        except Exception as e:
            raise translate_error(e, self.runner.nodes, "run") from None
        fetched = dict(zip(dynamic, io.get_outputs()[-len(dynamic):], strict=True)) \
            if dynamic else {}
        self._step += 1
        out: dict[str, np.ndarray] = {}
        for sess, user in self._outputs:
            # a fixed output's buffer is rewritten by the next step: copy it out
            arr = self._fixed[sess].numpy().copy() if sess in self._fixed else \
                fetched[sess].numpy()
            out[user] = self.runner.from_host(user, arr)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The current state, copied to NumPy."""
        cur = self._buffers[self._step % 2]
        return {name: v.numpy().copy() for name, v in zip(self.state_map, cur, strict=True)}

    def previous_state(self) -> dict[str, np.ndarray]:
        """The state before the last step (still held in the other ping-pong buffer)."""
        prev = self._buffers[(self._step - 1) % 2] if self._step else self._buffers[0]
        return {name: v.numpy().copy() for name, v in zip(self.state_map, prev, strict=True)}

    def set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace some state tensors (same dtypes and shapes)."""
        cur = self._buffers[self._step % 2]
        names = list(self.state_map)
        for name, arr in arrays.items():
            if name not in self.state_map:
                raise InputError(f"'{name}' is not a state of this runner ({names})")
            i = names.index(name)
            arr = np.array(arr, order="C", copy=True)  # not the caller's memory (see __init__)
            if arr.dtype != cur[i].numpy().dtype or arr.shape != tuple(cur[i].shape()):
                raise InputError(f"state '{name}' expects {cur[i].numpy().dtype}"
                                 f"{list(cur[i].shape())}, got {arr.dtype}{list(arr.shape)}")
            cur[i] = ort.OrtValue.ortvalue_from_numpy(arr, self.device, 0)
        self._bindings = [None, None]  # they hold the replaced OrtValues
