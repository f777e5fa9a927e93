"""Running a compiled training step repeatedly on NumPy, carrying its state between steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lbdl_graph.errors import InputError
from lbdl_graph.graph import Graph

from .interpreter import Interpreter

__all__ = ["NumpyStepRunner"]


class NumpyStepRunner:
    """Feeds ``state`` inputs and takes their ``<name>:next`` outputs after each step.

    ``state_names`` lists the inputs that carry state; ``initial`` gives their first values.
    Only the per-step inputs (the batch) are passed to :meth:`step`.
    """

    def __init__(self, graph: Graph, state_names: tuple[str, ...] | list[str],
                 initial: Mapping[str, np.ndarray], **options: Any) -> None:
        missing = [s for s in state_names if s not in initial]
        if missing:
            raise InputError(f"no initial value for state {missing}")
        outs = set(graph.output_names())
        absent = [s for s in state_names if f"{s}:next" not in outs]
        if absent:
            raise InputError(f"graph '{graph.name}' has no '<name>:next' output for {absent}")
        self.graph = graph
        self.state_names = tuple(state_names)
        self._state = {s: np.asarray(initial[s]) for s in state_names}
        self._previous = dict(self._state)
        self._interp = Interpreter(graph, **options)

    def step(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one step; returns the non-state outputs (loss, metrics)."""
        self._previous = dict(self._state)  # the arrays are replaced, never written: no copy
        out = self._interp.run({**batch, **self._state})
        for s in self.state_names:
            self._state[s] = out.pop(f"{s}:next")
        return out

    def previous_state(self) -> dict[str, np.ndarray]:
        """The state before the last step."""
        return dict(self._previous)

    def state(self) -> dict[str, np.ndarray]:
        """The current state (host arrays)."""
        return dict(self._state)

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state (e.g. from a checkpoint); names, shapes and dtypes must match."""
        for s in self.state_names:
            if s not in state:
                raise InputError(f"state '{s}' missing from the loaded state")
            new, old = np.asarray(state[s]), self._state[s]
            if new.shape != old.shape or new.dtype != old.dtype:
                raise InputError(f"state '{s}' is {new.dtype}{list(new.shape)}, expected "
                                 f"{old.dtype}{list(old.shape)}")
            self._state[s] = new
