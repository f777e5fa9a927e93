"""The op database for tests: samples of every op, with an independent oracle.

Each sample names an op, makes its inputs from a seeded generator, gives attributes and an
oracle. The oracle is either an ONNX node evaluated by ``onnx.reference.ReferenceEvaluator``
(``onnx_op`` + ``onnx_attrs`` + optional ``onnx_inputs`` to turn our attributes into ONNX
inputs), or an independent NumPy formula (``reference``). Samples live in ``tests/samples/*.py``,
one module per op group, each exporting ``SAMPLES``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lbdl_graph.opdef import OpDef

Arrays = list[np.ndarray | None]


@dataclass
class OpSample:
    """One test case of one op."""

    op: OpDef
    make: Callable[[np.random.Generator], Arrays]
    attrs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    # oracle 1: an ONNX node run by the ONNX reference evaluator
    onnx_op: str | None = None
    onnx_attrs: dict[str, Any] = field(default_factory=dict)
    onnx_inputs: Callable[[Arrays], Arrays] | None = None  # our inputs -> ONNX inputs
    onnx_opset: int = 21
    # oracle 2: an independent NumPy formula returning the outputs (a tuple for multi-output)
    reference: Callable[..., Any] | None = None
    rtol: float = 1e-5
    atol: float = 1e-6
    grad: bool = True  # include in gradient checks (differentiable ops only)
    grad_inputs: Sequence[int] | None = None  # which inputs to differentiate (default: floats)

    @property
    def id(self) -> str:
        """A readable pytest id."""
        return f"{self.op.name}-{self.label}" if self.label else self.op.name


# float32 sums of a few dozen products: absolute error around 1e-6 per unit of magnitude
TOL32: dict[str, float] = {"rtol": 1e-4, "atol": 1e-5}
TOL64: dict[str, float] = {"rtol": 1e-10, "atol": 1e-12}


def tol(dt: type) -> dict[str, float]:
    """The comparison tolerances of a float dtype (float32 or float64)."""
    return TOL32 if dt is np.float32 else TOL64


def randn(*shapes: tuple[int, ...] | None, dt: type = np.float32
          ) -> Callable[[np.random.Generator], Arrays]:
    """A generator of standard-normal inputs of the given shapes (None = absent input)."""

    def make(rng: np.random.Generator) -> Arrays:
        return [None if s is None else rng.standard_normal(s).astype(dt) for s in shapes]

    return make


def _load() -> list[OpSample]:
    from tests import samples

    out: list[OpSample] = []
    for info in sorted(pkgutil.iter_modules(samples.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"tests.samples.{info.name}")
        out.extend(getattr(mod, "SAMPLES", []))
    return out


OP_DB: list[OpSample] = _load()
