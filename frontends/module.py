"""Modules: PyTorch-style containers of parameters, buffers and sub-modules.

A :class:`Module` owns :class:`~lbdl_graph.frontends.parameter.Parameter` s and
:class:`~lbdl_graph.frontends.parameter.Buffer` s with NumPy data, is called inside a trace, and
names the nodes it creates after its path in the model (``encoder.layers.0.attn/matmul``).
Parameter names, layouts and the state dict follow PyTorch so checkpoints map one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from lbdl_graph.builder import _active
from lbdl_graph.dtypes import dtype
from lbdl_graph.errors import CheckpointError, GraphError, OpError

from .context import state_for
from .parameter import Buffer, Parameter

__all__ = ["IncompatibleKeys", "Module"]


class IncompatibleKeys(NamedTuple):
    """The keys :meth:`Module.load_state_dict` could not match (non-strict loading)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and models: subclass it, create sub-modules and parameters in
    ``__init__`` (after ``super().__init__()``) and write ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ---- calling ----
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; override in subclasses."""
        raise OpError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _active.get()
        if builder is None:
            raise GraphError(f"{type(self).__name__} was called outside a trace; modules build "
                             "graphs, they do not compute",
                             hint="use lbdl_graph.frontends.trace(model, inputs)")
        with state_for(builder).module_scope(self):
            return self.forward(*args, **kwargs)

    # ---- attribute registration ----
    def _dicts(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        try:
            d = self.__dict__
            return d["_parameters"], d["_buffers"], d["_modules"]
        except KeyError:
            raise OpError(f"{type(self).__name__}.__init__ must call super().__init__() before "
                          "assigning parameters or sub-modules") from None

    def __setattr__(self, name: str, value: Any) -> None:
        params: dict[str, Any] | None
        buffers: dict[str, Any] | None
        modules: dict[str, Any] | None
        if isinstance(value, Parameter | Module):
            params, buffers, modules = self._dicts()
            for d in (self.__dict__, params, buffers, modules):
                d.pop(name, None)
            (params if isinstance(value, Parameter) else modules)[name] = value
            return
        params, buffers, modules = (self.__dict__.get(k) for k in ("_parameters", "_buffers",
                                                                    "_modules"))
        if isinstance(value, Buffer) and buffers is not None and name not in buffers:
            self.__dict__.pop(name, None)
            buffers[name] = value
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Buffer):
                value = Buffer(value, persistent=buffers[name].persistent
                               if buffers[name] is not None else True)
            buffers[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise OpError(f"cannot assign {type(value).__name__} to parameter '{name}' of "
                              f"{type(self).__name__}", hint="wrap the array in Parameter(...)")
            params[name] = None
        elif modules is not None and name in modules and value is None:
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            table = d.get(key)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for key in ("_parameters", "_buffers", "_modules"):
            table = self.__dict__.get(key)
            if table is not None and name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (None declares an absent one, like a disabled bias)."""
        params, _, _ = self._dicts()
        if param is not None and not isinstance(param, Parameter):
            raise OpError(f"register_parameter('{name}') needs a Parameter, got "
                          f"{type(param).__name__}")
        self.__dict__.pop(name, None)
        params[name] = param

    def register_buffer(self, name: str, data: Any, persistent: bool = True) -> None:
        """Add a buffer: non-trainable state saved in the state dict (unless not persistent)."""
        _, buffers, _ = self._dicts()
        self.__dict__.pop(name, None)
        buffers[name] = None if data is None else Buffer(data, persistent)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a sub-module under ``name``."""
        _, _, modules = self._dicts()
        if module is not None and not isinstance(module, Module):
            raise OpError(f"add_module('{name}') needs a Module, got {type(module).__name__}")
        modules[name] = module

    register_module = add_module

    # ---- traversal ----
    def named_modules(self, prefix: str = "", memo: set[int] | None = None,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """``(path, module)`` for this module and every descendant, depth first."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self.__dict__["_modules"].items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo,
                                           remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct sub-modules with their names."""
        for name, m in self.__dict__["_modules"].items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        """The direct sub-modules."""
        for _, m in self.named_children():
            yield m

    def _named_leaves(self, key: str, prefix: str, recurse: bool,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix, remove_duplicate=remove_duplicate) if recurse else [
            (prefix, self)]
        for path, m in mods:
            for name, leaf in m.__dict__[key].items():
                if leaf is None or (remove_duplicate and id(leaf) in seen):
                    continue
                seen.add(id(leaf))
                yield (f"{path}.{name}" if path else name), leaf

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs, each shared parameter once."""
        return self._named_leaves("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter, each shared one once."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True
                      ) -> Iterator[tuple[str, Buffer]]:
        """``(name, buffer)`` pairs."""
        return self._named_leaves("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Buffer]:
        """Every buffer."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        """The sub-module at a dotted path (``"encoder.layers.0"``)."""
        m: Module = self
        for part in target.split(".") if target else []:
            sub = m.__dict__["_modules"].get(part)
            if sub is None:
                raise OpError(f"{type(m).__name__} has no sub-module '{part}' (path '{target}')")
            m = sub
        return m

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total number of parameter elements (optionally only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    # ---- state ----
    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Parameters and persistent buffers by dotted name (arrays, not copies). A shared
        parameter appears under every name, as in PyTorch."""
        out: dict[str, np.ndarray] = {}
        for path, m in self.named_modules(prefix, remove_duplicate=False):
            p = f"{path}." if path else ""
            for name, leaf in m.__dict__["_parameters"].items():
                if leaf is not None:
                    out[p + name] = leaf.data
            for name, leaf in m.__dict__["_buffers"].items():
                if leaf is not None and leaf.persistent:
                    out[p + name] = leaf.data
        return out

    def _state_leaves(self) -> dict[str, Parameter | Buffer]:
        out: dict[str, Parameter | Buffer] = {}
        for path, m in self.named_modules(remove_duplicate=False):
            p = f"{path}." if path else ""
            for name, leaf in m.__dict__["_parameters"].items():
                if leaf is not None:
                    out[p + name] = leaf
            for name, leaf in m.__dict__["_buffers"].items():
                if leaf is not None and leaf.persistent:
                    out[p + name] = leaf
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers (in place, cast to their dtypes).

        Mis-shaped entries always raise :class:`~lbdl_graph.errors.CheckpointError`; with
        ``strict`` missing and unexpected keys do too. Nothing is written if it raises.
        """
        leaves = self._state_leaves()
        missing = [k for k in leaves if k not in state_dict]
        unexpected = [k for k in state_dict if k not in leaves]
        mismatched: list[str] = []
        arrays: dict[str, np.ndarray] = {}
        for k, leaf in leaves.items():
            if k not in state_dict:
                continue
            arr = np.asarray(getattr(state_dict[k], "data", state_dict[k]))
            target = leaf.data.dtype
            if arr.shape != leaf.data.shape:
                mismatched.append(f"{k}: checkpoint {tuple(arr.shape)}, model "
                                  f"{tuple(leaf.data.shape)}")
            elif not np.can_cast(arr.dtype, target, casting="same_kind"):
                # float -> int or str -> float would truncate or fail half-way through
                mismatched.append(f"{k}: checkpoint dtype {arr.dtype}, model {target}")
            else:
                arrays[k] = arr.astype(target, copy=False)
        problems = []
        if mismatched:
            problems.append("shape/dtype mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise CheckpointError(f"cannot load state_dict into {type(self).__name__}:\n  "
                                  + "\n  ".join(problems),
                                  hint=None if mismatched else "pass strict=False to load a "
                                  "partial state dict")
        for k, arr in arrays.items():
            leaves[k].data[...] = arr
        return IncompatibleKeys(missing, unexpected)

    # ---- modes ----
    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active, BatchNorm on batch statistics) recursively."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Set evaluation mode recursively."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module (children first) and on self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, dt: Any) -> Module:
        """Convert floating-point parameters and buffers to dtype ``dt``."""
        target = dtype(dt)
        if not target.is_float:
            raise OpError(f"Module.to() converts float parameters; {target.name} is not a float "
                          "type")
        for leaf in [*self.parameters(), *self.buffers()]:
            if leaf.dtype.is_float:
                leaf.data = leaf.data.astype(target.numpy)
        return self

    def float(self) -> Module:
        """Float32 parameters."""
        return self.to("float32")

    def double(self) -> Module:
        """Float64 parameters."""
        return self.to("float64")

    # ---- printing ----
    def extra_repr(self) -> str:
        """The hyper-parameters shown by ``repr`` (override in layers)."""
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self.named_children():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {sub}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
