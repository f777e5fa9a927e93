"""Tracing: run a model's ``forward`` on symbolic inputs and return the verified graph.

Parameters become trainable graph parameters and buffers non-trainable ones, named as in the
state dict. In training mode BatchNorm's new running statistics become extra outputs
``<buffer>:next`` (listed in ``graph.metadata["state_updates"]``) and dropout layers read the
``rng_key`` input (``graph.metadata["rng_input"]``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbdl_graph.builder import GraphBuilder
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import GraphError, ShapeError
from lbdl_graph.graph import Graph, Value
from lbdl_graph.shapes import Dim, shape_of

from .context import state_for
from .module import Module
from .tensor import Tensor

__all__ = ["InputSpec", "trace"]


@dataclass(frozen=True)
class InputSpec:
    """A graph input: shape (ints and symbolic names such as ``("N", 784)``), dtype and an
    optional name (default: the forward argument's name)."""

    shape: tuple[Dim, ...]
    dtype: Any = "float32"
    name: str | None = None


def _spec(x: Any, where: str) -> InputSpec:
    if isinstance(x, InputSpec):
        return x
    if isinstance(x, np.ndarray):
        return InputSpec(tuple(int(d) for d in x.shape), dtype(x.dtype))
    if isinstance(x, tuple | list):
        return InputSpec(tuple(x))
    raise ShapeError(f"input {where}: expected a shape tuple, an InputSpec or a NumPy array, got "
                     f"{type(x).__name__}")


def _arg_names(fn: Callable[..., Any], n: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    named = [p.name for p in params
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [named[i] if i < len(named) else f"input{i}" for i in range(n)]


def _flatten(out: Any) -> list[Any]:
    """Nested tuples flattened depth first, as ``(y, (h, c))`` -> ``[y, h, c]``."""
    if isinstance(out, tuple | list):
        return [v for item in out for v in _flatten(item)]
    return [out]


def _outputs(out: Any) -> dict[str, Value]:
    def _value(v: Any, name: str) -> Value:
        if not isinstance(v, Tensor):
            raise GraphError(f"model output '{name}' is {type(v).__name__}, not a Tensor")
        return v.value

    if isinstance(out, Tensor):
        return {"output": out.value}
    if isinstance(out, Mapping):
        return {str(k): _value(v, str(k)) for k, v in out.items() if v is not None}
    if isinstance(out, tuple | list):
        flat = [v for v in _flatten(out) if v is not None]
        return {f"output{i}": _value(v, f"output{i}") for i, v in enumerate(flat)}
    raise GraphError(f"the model returned {type(out).__name__}; return a Tensor, a tuple or a "
                     "dict of Tensors")


def trace(model: Module | Callable[..., Any], inputs: Mapping[str, Any] | Sequence[Any], *,
          name: str | None = None, training: bool | None = None,
          module: Module | None = None) -> Graph:
    """Trace ``model`` (a Module or a function of Tensors) into a verified :class:`Graph`.

    Args:
        model: the model; its ``forward`` is called once on symbolic tensors.
        inputs: a dict (passed as keyword arguments, keys are the input names) or a list
            (positional; names from ``forward``'s signature) of specs: a shape tuple (float32,
            symbolic dims allowed), an :class:`InputSpec` or a NumPy array (its shape and dtype).
        name: the graph name (default: the model's class name).
        training: trace in training (True) or eval (False) mode; None keeps the model's mode.
            The model's own modes are restored afterwards.
        module: when ``model`` is a plain function (e.g. a model followed by its loss), the
            module whose parameters and sub-module paths name the graph's parameters and nodes.

    Returns:
        The graph; outputs are named ``output`` (one tensor), ``output0..`` (a tuple, nested
        tuples flattened depth first; None entries skipped) or after the keys of a returned
        dict, followed by the ``<buffer>:next`` state updates.
    """
    is_module = isinstance(model, Module)
    root = model if isinstance(model, Module) else module
    gname = name or (type(model).__name__ if is_module
                     else str(getattr(model, "__name__", "graph")))
    b = GraphBuilder(gname)
    st = state_for(b)
    saved: list[tuple[Module, bool]] = []
    if root is not None:
        st.module_paths = {id(m): p for p, m in root.named_modules()}
        if training is not None:
            saved = [(m, m.training) for m in root.modules()]
            root.train(training)
        is_training = root.training
    else:
        is_training = bool(training)
    try:
        with b:
            if isinstance(inputs, Mapping):
                specs = {k: _spec(v, repr(k)) for k, v in inputs.items()}
                kwargs = {k: Tensor(b.input(s.name or k, s.dtype, shape_of(s.shape)))
                          for k, s in specs.items()}
                args: list[Tensor] = []
            else:
                fn = model.forward if isinstance(model, Module) else model
                names = _arg_names(fn, len(inputs))
                lst = [_spec(v, f"{i}") for i, v in enumerate(inputs)]
                args = [Tensor(b.input(s.name or n, s.dtype, shape_of(s.shape)))
                        for s, n in zip(lst, names, strict=True)]
                kwargs = {}
            if root is not None:
                for pname, p in root.named_parameters():
                    st.names[id(p)] = pname
                    st.declare(p, pname, trainable=p.requires_grad)
                for bname, buf in root.named_buffers():
                    st.names[id(buf)] = bname
                    st.declare(buf, bname, trainable=False)
            out = model(*args, **kwargs)
            outputs = _outputs(out)
        for bname, v in st.updates.items():
            outputs[f"{bname}:next"] = v
        if st.updates:
            b.metadata["state_updates"] = {k: f"{k}:next" for k in st.updates}
        b.metadata["training"] = is_training
        return b.build(outputs)
    finally:
        for m, mode in saved:
            object.__setattr__(m, "training", mode)
