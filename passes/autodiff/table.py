"""The VJP table: one reverse-mode rule per differentiable op, keyed by its OpDef.

A rule is called inside the gradient builder as ``rule(g, out, *inputs, **attrs)``:

- ``g``: the cotangent of the node's output (for multi-output ops such as ``split`` and
  ``max_pool``: a tuple with one entry per output, None where no gradient flows back);
- ``out``: the node's output value (a tuple for multi-output ops), handy for ``exp``, ``tanh``;
- ``inputs``: the node's input values (None for an absent optional input);
- ``attrs``: the node's checked attributes as keywords.

It returns one cotangent per input (None for inputs without a gradient: indices, keys,
conditions, absent optionals). A cotangent may have the *broadcast* shape of the op's output:
the driver sums it back to the input's shape (``sum_to``), so rules never unbroadcast.
"""

from __future__ import annotations

from collections.abc import Callable

from lbdl_graph.graph import Value
from lbdl_graph.opdef import Trait
from lbdl_graph.registry import OpTable

__all__ = ["VJPS", "VjpRule"]

VjpRule = Callable[..., tuple[Value | None, ...]]
VJPS: OpTable[VjpRule] = OpTable("vjp", only=Trait.DIFFERENTIABLE)

