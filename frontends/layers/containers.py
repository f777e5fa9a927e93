"""Containers: Sequential, ModuleList, ModuleDict, and the Residual skip connection (book
section 4.7)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lbdl_graph.errors import OpError

from ..module import Module
from ..tensor import Tensor, as_tensor
from ._util import layer_error

__all__ = ["ModuleDict", "ModuleList", "Residual", "Sequential"]


def _check_module(layer: str, m: Any) -> Module:
    if not isinstance(m, Module):
        raise layer_error(layer, f"expects Modules, got {type(m).__name__}", OpError)
    return m


class Sequential(Module):
    """Applies its modules in order: ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))``, or
    from an ``OrderedDict`` of named modules."""

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict | dict):
            for name, m in modules[0].items():
                self.add_module(str(name), _check_module("Sequential", m))
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), _check_module("Sequential", m))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, i: int | slice) -> Any:
        items = list(self._modules.items())
        if isinstance(i, slice):
            return Sequential(OrderedDict(items[i]))
        return items[i][1]

    def append(self, module: Module) -> Sequential:
        """Add a module at the end."""
        self.add_module(str(len(self)), _check_module("Sequential", module))
        return self

    def forward(self, x: Any) -> Any:
        """Feed ``x`` through every module in turn."""
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of sub-modules named ``0``, ``1``, ... (``layers.3.attn``)."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        for m in modules or ():
            self.append(m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, i: int | slice) -> Any:
        mods = list(self._modules.values())
        return ModuleList(mods[i]) if isinstance(i, slice) else mods[i]

    def __setitem__(self, i: int, module: Module) -> None:
        key = list(self._modules)[i]
        self.add_module(key, _check_module("ModuleList", module))

    def append(self, module: Module) -> ModuleList:
        """Add a module at the end."""
        self.add_module(str(len(self)), _check_module("ModuleList", module))
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Add several modules at the end."""
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert a module before ``index`` (the others are renumbered)."""
        mods = list(self._modules.values())
        mods.insert(index, _check_module("ModuleList", module))
        self._modules.clear()
        for m in mods:
            self.append(m)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """A ModuleList is not callable itself; iterate over it."""
        raise OpError("ModuleList has no forward(); call its modules in your own forward")


class ModuleDict(Module):
    """A dict of sub-modules, kept in insertion order."""

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        for k, m in (modules or {}).items():
            self[k] = m

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(str(key), _check_module("ModuleDict", module))

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> Iterable[str]:
        """The names."""
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        """The modules."""
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        """``(name, module)`` pairs."""
        return self._modules.items()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """A ModuleDict is not callable itself; index it."""
        raise OpError("ModuleDict has no forward(); call its modules in your own forward")


class Residual(Module):
    """``body(x) + skip(x)``: a skip connection (book section 4.7); ``skip`` defaults to the
    identity, or is e.g. a 1x1 convolution when the body changes the shape."""

    def __init__(self, body: Module, skip: Module | None = None) -> None:
        super().__init__()
        self.body = _check_module("Residual", body)
        if skip is not None:
            self.skip = _check_module("Residual", skip)
        else:
            self.add_module("skip", None)

    def forward(self, x: Tensor) -> Tensor:
        """Add the body's output to the (possibly projected) input."""
        t = as_tensor(x)
        shortcut = t if self.skip is None else self.skip(t)
        return self.body(t) + shortcut
