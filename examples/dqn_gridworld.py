"""Reinforcement learning (book section 6.7): a deep Q-network learns to walk a grid world.

The agent starts on a random free cell of a 6x6 maze and moves up, down, left or right; a move
costs 0.01, the goal G pays +1 and the pit P costs 1 (both end the episode), walls # block, and
an episode stops after 30 moves. The observation is the one-hot cell. The zoo's ``DQN`` (an
MLP 36-64-64-4) is trained by Q-learning: epsilon-greedy acting, a replay buffer in NumPy,
targets ``r + gamma * max_a Q_target(s', a)`` from a target network (a copy of the weights
refreshed every 250 steps) and one compiled training step (forward, MSE on the chosen
action's Q-value, backward, Adam) per environment step. The greedy policy's return from
every start cell is compared with a random policy, the untrained network and the optimum
(shortest paths). The trained Q-network is exported to ONNX and checked against NumPy.

    python examples/dqn_gridworld.py              # 4000 environment steps (about 2 s)
"""

from __future__ import annotations

from collections import deque

import numpy as np
from _common import check_onnx, parse_args, stage

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.frontends import Tensor, manual_seed, trace
from lbdl_graph.frontends.training import compile_training
from lbdl_graph.frontends.training.runners import make_step_runner
from lbdl_graph.frontends.zoo import DQN, DQNConfig
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import params_to_inputs

MAZE = ("....#.",
        ".##.#.",
        ".#....",
        ".#.##.",
        "...#P.",
        "##...G")
SIDE, MOVES, MAX_MOVES, GAMMA = 6, ((-1, 0), (1, 0), (0, -1), (0, 1)), 30, 0.95
CELLS = [(r, c) for r in range(SIDE) for c in range(SIDE) if MAZE[r][c] == "."]


def step_env(cell: tuple[int, int], action: int) -> tuple[tuple[int, int], float, bool]:
    """Next cell, reward and whether the episode ended."""
    r, c = cell[0] + MOVES[action][0], cell[1] + MOVES[action][1]
    if not (0 <= r < SIDE and 0 <= c < SIDE) or MAZE[r][c] == "#":
        r, c = cell
    kind = MAZE[r][c]
    return (r, c), {"G": 1.0, "P": -1.0}.get(kind, -0.01), kind in "GP"


def one_hot(cells: list[tuple[int, int]]) -> np.ndarray:
    """(n, 36) float32 observations."""
    out = np.zeros((len(cells), SIDE * SIDE), np.float32)
    out[np.arange(len(cells)), [r * SIDE + c for r, c in cells]] = 1.0
    return out


def episode(policy: object, start: tuple[int, int]) -> float:
    """Undiscounted return of one episode from ``start`` (policy: cell -> action)."""
    cell, total = start, 0.0
    for _ in range(MAX_MOVES):
        cell, reward, done = step_env(cell, policy(cell))  # type: ignore[operator]
        total += reward
        if done:
            break
    return total


def optimal_return(start: tuple[int, int]) -> float:
    """Return of a shortest path to the goal (breadth-first search)."""
    seen, frontier, moves = {start}, [start], 0
    while frontier:
        moves += 1
        nxt = []
        for cell in frontier:
            for a in range(4):
                new, _, done = step_env(cell, a)
                if MAZE[new[0]][new[1]] == "G":
                    return 1.0 - 0.01 * (moves - 1)
                if not done and new not in seen:
                    seen.add(new)
                    nxt.append(new)
        frontier = nxt
    return 0.0


def q_loss(q: Tensor, y: Tensor) -> Tensor:
    """MSE between Q(s, a) of the taken actions (y[:, 0]) and the targets (y[:, 1])."""
    chosen = q.gather(1, y[:, :1].long()).squeeze(1)
    return ((chosen - y[:, 1]) ** 2).mean()


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 4000, "environment steps")})
    steps, batch, warmup = (60, 16, 20) if args.quick else (args.steps, 64, 200)
    rng = np.random.default_rng(args.seed)
    manual_seed(args.seed)
    model = DQN(DQNConfig(obs_dim=SIDE * SIDE, hidden=(64, 64), num_actions=4))
    fwd = trace(model, {"obs": ("N", SIDE * SIDE)}, training=False)
    names = [p.name for p in fwd.params]
    q_net = Interpreter(params_to_inputs(fwd, names), training=False)
    step, _ = compile_training(model, one_hot(CELLS[:2]), np.zeros((2, 2), np.float32),
                               loss=q_loss, optimizer=Adam(1e-3))
    runner = make_step_runner(step, args.backend)

    def q_values(obs: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        return q_net.run({"obs": obs, **params})["output"]

    def greedy(params: dict[str, np.ndarray]) -> object:
        return lambda cell: int(q_values(one_hot([cell]), params)[0].argmax())

    untrained = greedy({k: v for k, v in runner.state().items() if k in names})
    buffer: deque[tuple[tuple[int, int], int, float, tuple[int, int], bool]] = deque(
        maxlen=5000)
    online = target = {k: v for k, v in runner.state().items() if k in names}
    cell, moves, losses = CELLS[rng.integers(len(CELLS))], 0, []
    with stage(f"Q-learning on {args.backend}: {steps} environment steps, batch {batch}, "
               f"gamma {GAMMA}, {model.num_parameters():,} parameters"):
        for t in range(steps):
            eps = max(0.05, 1.0 - t / (0.6 * steps))
            action = int(rng.integers(4)) if rng.random() < eps else \
                int(q_values(one_hot([cell]), online)[0].argmax())
            new, reward, done = step_env(cell, action)
            buffer.append((cell, action, reward, new, done))
            moves += 1
            if done or moves == MAX_MOVES:
                cell, moves = CELLS[rng.integers(len(CELLS))], 0
            else:
                cell = new
            if len(buffer) >= warmup:
                idx = rng.integers(len(buffer), size=batch)
                s, a, r, s2, d = zip(*(buffer[i] for i in idx), strict=True)
                nxt = q_values(one_hot(list(s2)), target).max(1)
                y = np.stack([a, np.array(r) + GAMMA * (1 - np.array(d)) * nxt], 1)
                losses.append(float(runner.step({"x": one_hot(list(s)),
                                                 "y": y.astype(np.float32)})["loss"]))
                online = {k: v for k, v in runner.state().items() if k in names}
            if t % 250 == 0:
                target = online
    print(f"TD loss: first 100 updates {np.mean(losses[:100]):.2e}, last 100 "
          f"{np.mean(losses[-100:]):.2e}")

    policies = {"random policy": lambda _: int(rng.integers(4)), "untrained DQN": untrained,
                "trained DQN (greedy)": greedy(online)}
    for name, policy in policies.items():
        returns = [episode(policy, s) for s in CELLS for _ in range(5 if "random" in name else 1)]
        print(f"{name:<21} mean return {np.mean(returns):+.3f}, reaches the goal from "
              f"{np.mean(np.array(returns) > 0):.0%} of the start cells")
    print(f"{'optimal (BFS)':<21} mean return {np.mean([optimal_return(s) for s in CELLS]):+.3f}")

    model.load_state_dict({**model.state_dict(), **online})
    graph = trace(model, {"obs": ("N", SIDE * SIDE)}, training=False)
    check_onnx(graph, {"obs": one_hot(CELLS)}, args.out, "dqn_gridworld")


if __name__ == "__main__":
    main()
