"""Deep Q-networks (book section 6.7, reinforcement learning; Mnih et al. 2015).

A Q-network maps an observation to one value per action, Q(s, a); the policy takes the
argmax and the training target is ``r + gamma * max_a' Q_target(s', a')``. Two bodies:
an MLP for vector observations (CartPole's 4 numbers) and the Nature-DQN convnet for stacks of
four 84x84 grey frames. ``dueling=True`` splits the head into a state value V(s) and
advantages A(s, a), combined as ``V + A - mean(A)`` (Wang et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdl_graph.errors import OpError

from ..layers import Conv2d, Flatten, Linear, ReLU, Sequential
from ..module import Module
from ..tensor import Tensor
from ..trace import InputSpec
from ._common import mlp_stack
from ._registry import ZooEntry

__lbdl_user_code__ = True

__all__ = ["DQN", "ZOO_ENTRIES", "DQNConfig"]


@dataclass(frozen=True)
class DQNConfig:
    """``kind`` "mlp" (``obs_dim`` -> ``hidden``) or "conv" (Nature DQN on ``in_channels`` x
    ``image_size``^2 frames, then a ``hidden[-1]`` wide Linear), ``num_actions`` Q-values."""

    kind: str = "mlp"
    obs_dim: int = 4
    in_channels: int = 4
    image_size: int = 84
    hidden: tuple[int, ...] = (64, 64)
    num_actions: int = 2
    dueling: bool = False


def _nature_side(s: int) -> int:
    """Side after the Nature convolutions (8/4, 4/2, 3/1, no padding)."""
    for k, st in ((8, 4), (4, 2), (3, 1)):
        s = (s - k) // st + 1
    return s


class DQN(Module):
    """``forward(obs)`` -> Q-values (N, num_actions)."""

    def __init__(self, config: DQNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DQNConfig()
        if c.kind == "mlp":
            self.body = mlp_stack((c.obs_dim, *c.hidden), final_activation=True)
        elif c.kind == "conv":
            side = _nature_side(c.image_size)
            if side < 1:
                raise OpError(f"DQNConfig: frames of {c.image_size} pixels are too small")
            self.body = Sequential(
                Conv2d(c.in_channels, 32, 8, stride=4), ReLU(),
                Conv2d(32, 64, 4, stride=2), ReLU(),
                Conv2d(64, 64, 3, stride=1), ReLU(),
                Flatten(), *mlp_stack((64 * side * side, *c.hidden), final_activation=True))
        else:
            raise OpError(f"DQNConfig: kind must be 'mlp' or 'conv', got {c.kind!r}")
        width = c.hidden[-1]
        if c.dueling:
            self.value = Linear(width, 1)
            self.advantage = Linear(width, c.num_actions)
        else:
            self.q = Linear(width, c.num_actions)

    def forward(self, obs: Tensor) -> Tensor:
        """Q(s, a) for every action."""
        h = self.body(obs)
        if not self.config.dueling:
            return self.q(h)
        a = self.advantage(h)
        return self.value(h) + a - a.mean(-1, keepdim=True)


ZOO_ENTRIES = [
    ZooEntry(
        name="dqn",
        config=DQNConfig(),
        build=DQN,
        inputs={"obs": InputSpec(("N", 4))},
        outputs={"output": ("N", 2)},
        description="MLP Q-network 4-64-64-2 (CartPole)",
        task="reinforcement learning (Q-values per action)",
    ),
    ZooEntry(
        name="dqn_dueling",
        config=DQNConfig(obs_dim=8, hidden=(32, 32), num_actions=4, dueling=True),
        build=DQN,
        inputs={"obs": InputSpec(("N", 8))},
        outputs={"output": ("N", 4)},
        description="dueling MLP Q-network 8-32-32-(V, A) (LunarLander-sized)",
        task="reinforcement learning (Q-values per action)",
    ),
    ZooEntry(
        name="dqn_atari",
        config=DQNConfig(kind="conv", hidden=(512,), num_actions=18),
        build=DQN,
        inputs={"obs": InputSpec(("N", 4, 84, 84))},
        outputs={"output": ("N", 18)},
        description="Nature DQN: conv 8x8/4 (32), 4x4/2 (64), 3x3/1 (64), fc 512, 18 actions",
        task="reinforcement learning on Atari frames (Q-values per action)",
    ),
]
