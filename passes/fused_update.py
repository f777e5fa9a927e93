"""One optimizer update over the concatenation of many small parameters.

Built per parameter, an Adam update is a dozen elementwise nodes; for a bias of 256 numbers
each costs the backend a kernel launch (about 2 us on ONNX Runtime's CPU provider) for next to
no arithmetic. :func:`grouped_updates` lays the small parameters of one dtype (and their
gradients and optimizer slots) end to end as flat vectors, builds the optimizer's chain once
over them, and cuts the results back into per-parameter tensors. Only optimizers whose update
is elementwise (``Optimizer.elementwise``: SGD, Adam, AdamW) are grouped, so every element goes
through the very same operations as in its own update: the results are bit-identical.
State names and shapes are unchanged (``opt.m/<param>`` stays an input of the param's shape),
so checkpoints move freely between the two forms. Large parameters keep their own chain: for
them the launches are noise and the concatenation and split would add two passes over memory.
On ONNX Runtime's CPU provider a launch costs less than the copies save on most models, so
``make_train_step`` fuses only when asked (``fuse_below=``); see ``FUSE_BELOW``.

Nodes of a group have the scope ``optim/flat`` (the split and reshape that produce a
parameter's next value and slots: ``optim/<param>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lbdl_graph import ops
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.graph import Value

from .optim import Optimizer

__all__ = ["FUSE_BELOW", "group_small", "grouped_updates"]

# elements; below it a parameter joins its dtype's flat update. Off by default, by measurement
# (benchmarks/fused_update.py, ORT CPU, 1 thread, thread CPU time per step at 16384 vs 0):
# ResNet-tiny 1.03-1.04x faster, LeNet 0.99-1.00x, MLP 0.985-0.99x; everything flat (no
# threshold) makes the MLP 0.71x (the concatenation and split of its 200k-element weight)
FUSE_BELOW = 0


def group_small(params: Mapping[str, Value], optimizer: Optimizer, below: int
                ) -> list[list[str]]:
    """Groups (two or more names, in ``params`` order) of the parameters of fewer than ``below``
    elements with static shapes, one group per dtype; none unless the update is elementwise."""
    if not optimizer.elementwise or below <= 0:
        return []
    groups: dict[str, list[str]] = {}
    for name, v in params.items():
        dims = [d for d in v.type.shape if isinstance(d, int)]
        if len(dims) == len(v.type.shape) and math.prod(dims) < below:
            groups.setdefault(v.type.dtype.name, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _flat(values: Sequence[Value]) -> Value:
    return ops.concat(*(ops.reshape(v, shape=(-1,)) for v in values), axis=0)


def grouped_updates(b: GraphBuilder, names: Sequence[str], params: Mapping[str, Value],
                    grads: Mapping[str, Value], slots: Mapping[str, Mapping[str, Value]],
                    optimizer: Optimizer, step: Value, lr: Value
                    ) -> dict[str, tuple[Value, dict[str, Value]]]:
    """The update of the parameters ``names`` as one flat chain (built in ``b``, active):
    per name, its next value and next slots, as :meth:`Optimizer.update` returns them."""
    sizes = [math.prod(int(d) for d in params[n].type.shape) for n in names]
    with b.scope("flat"), b.provenance("optim/flat"):
        new_p, new_slots = optimizer.update(
            _flat([params[n] for n in names]), _flat([grads[n] for n in names]),
            {s: _flat([slots[n][s] for n in names]) for s in optimizer.slots()}, step, lr)
        pieces = {"": ops.split(new_p, axis=0, split=tuple(sizes))}
        pieces.update((s, ops.split(v, axis=0, split=tuple(sizes)))
                      for s, v in new_slots.items())
    out: dict[str, tuple[Value, dict[str, Value]]] = {}
    for i, n in enumerate(names):
        shape = tuple(params[n].type.shape)
        with b.scope(n), b.provenance(f"optim/{n}"):
            cut = {s: ops.reshape(v[i], shape=shape) for s, v in pieces.items()}
        out[n] = (cut.pop(""), cut)
    return out
