"""Collective ops: values combined across the processes of a distributed run.

``all_reduce(x, group=...)`` is the elementwise sum of ``x`` over every process of the named
group; every process gets the sum. The IR only declares it: which processes form a group is
bound when the graph runs (the NumPy kernel calls the reducer bound with
``lbdl_graph.backends.collectives.bind``; the data-parallel ONNX Runtime runner cuts the graph
at each collective and reduces between sessions). With nothing bound the group is this one
process and the op is the identity. Its VJP is again an all-reduce (every process's output is
the sum of every process's input, so each input's cotangent is the sum of all cotangents).
"""

from __future__ import annotations

from ..opdef import Attr, Trait, defop
from ..types import TensorType
from ._rules import require

__all__ = ["all_reduce"]


def _all_reduce_rule(x: TensorType, *, group: str) -> TensorType:
    require(x, "input", kinds=("float",))
    return x


all_reduce = defop(
    "all_reduce", ("x",), infer=_all_reduce_rule, attrs=(Attr("group", "str", "data"),),
    traits=(Trait.DIFFERENTIABLE, Trait.COLLECTIVE),
    doc="the sum of x over the processes of `group` (the identity in a lone process)")
