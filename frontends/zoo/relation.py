"""Relation networks (glossaries, "Relational reasoning"; Santoro et al. 2017).

A scene is a set of S objects ``o_1 .. o_S`` (vectors of ``object_dim`` features) and a question
embedding ``q``. A relation network scores every ordered pair with one MLP and sums:

    RN(O, q) = f_phi( sum_{i,j} g_theta(o_i, o_j, q) )

so the answer cannot depend on the order of the objects, and the same weights serve any number
of them: S is a symbolic dim of the graph. The pair tensor is built by broadcasting, without a
loop over pairs: the first layer of ``g_theta`` is a Linear over the concatenation
``[o_i, o_j, q]``, which is the sum of three Linears (its weight split by columns), so each
object is projected once, ``(N, S, 1, H) + (N, 1, S, H) + (N, 1, 1, H)`` gives the
(N, S, S, H) pre-activations of all S^2 pairs, and the other layers of ``g_theta`` act on the
last axis of that tensor.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from lbdl_graph.errors import OpError

from .. import init
from ..layers import Linear, Sequential
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import activation, mlp_stack
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["ZOO_ENTRIES", "RelationNetwork", "RelationNetworkConfig"]


@dataclass(frozen=True)
class RelationNetworkConfig:
    """Object and question widths, the widths of ``g_theta``'s layers (``g_hidden``, at least
    one) and of ``f_phi``'s hidden layers, and the number of answers (logits)."""

    object_dim: int = 10
    question_dim: int = 13
    g_hidden: tuple[int, ...] = (64, 64, 64)
    f_hidden: tuple[int, ...] = (64,)
    num_answers: int = 11
    activation: str = "relu"
    dropout: float = 0.0


class RelationNetwork(Module):
    """``forward(objects, question)``: objects (N, S, D) and questions (N, Q) -> answer logits
    (N, A). ``g_left``, ``g_right`` and ``g_question`` are the columns of ``g_theta``'s first
    Linear that read o_i, o_j and q; ``g`` its other layers; ``f`` is ``f_phi``."""

    def __init__(self, config: RelationNetworkConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or RelationNetworkConfig()
        if not c.g_hidden:
            raise OpError("RelationNetworkConfig.g_hidden needs at least one width")
        h = c.g_hidden[0]
        self.g_left = Linear(c.object_dim, h)
        self.g_right = Linear(c.object_dim, h, bias=False)
        self.g_question = Linear(c.question_dim, h, bias=False)
        bound = 1.0 / math.sqrt(2 * c.object_dim + c.question_dim)  # as one Linear would be
        for lin in (self.g_left, self.g_right, self.g_question):
            init.uniform_(lin.weight, -bound, bound)
        init.uniform_(self.g_left.bias, -bound, bound)
        self.g_act = activation(c.activation)
        layers: list[Module] = []
        for a, b in itertools.pairwise(c.g_hidden):
            layers += [Linear(a, b), activation(c.activation)]
        self.g = Sequential(*layers)
        self.f = mlp_stack((c.g_hidden[-1], *c.f_hidden, c.num_answers), c.activation,
                           c.dropout)

    def relations(self, objects: Tensor, question: Tensor) -> Tensor:
        """``g_theta`` of every ordered pair (i, j): (N, S, S, H), row i and column j."""
        left = self.g_left(objects).unsqueeze(2)        # o_i: (N, S, 1, H)
        right = self.g_right(objects).unsqueeze(1)      # o_j: (N, 1, S, H)
        q = self.g_question(question).unsqueeze(1).unsqueeze(1)  # (N, 1, 1, H)
        return self.g(self.g_act(left + right + q))

    def forward(self, objects: Tensor, question: Tensor) -> Tensor:
        """Answer logits (N, num_answers) from the sum of the pair relations."""
        return self.f(self.relations(objects, question).sum((1, 2)))


ZOO_ENTRIES = [
    ZooEntry(
        name="relation_network",
        config=RelationNetworkConfig(),
        build=RelationNetwork,
        inputs={"objects": InputSpec(("N", "S", 10)), "question": InputSpec(("N", 13))},
        outputs={"output": ("N", 11)},
        description="relation network: g_theta 33-64-64-64 over all S^2 object pairs "
                    "(broadcast, S symbolic), summed, f_phi 64-64-11",
        task="relational question answering over a set of objects (Sort-of-CLEVR-like)",
    ),
]
