"""Hand-written NumPy training steps used as baselines by the benchmarks (same math as ours)."""

from __future__ import annotations

import numpy as np

__all__ = ["NumpyMLPAdam"]


class NumpyMLPAdam:
    """An MLP (ReLU hidden layers, softmax cross-entropy) trained by Adam, written by hand.

    Weights use PyTorch's layout (out, in); the forward is x @ W.T + b.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], lr: float = 1e-3,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        n_layers = len(layers)
        params = {}
        for i, (w, b) in enumerate(layers):
            params[f"layers.{i}.weight"], params[f"layers.{i}.bias"] = w, b
        self.p = {k: v.copy() for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.n, self.lr, self.b1, self.b2, self.eps, self.t = n_layers, lr, b1, b2, eps, 0

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One forward/backward/Adam step; returns the loss."""
        acts = [x]
        h = x
        for i in range(self.n):
            h = h @ self.p[f"layers.{i}.weight"].T + self.p[f"layers.{i}.bias"]
            if i < self.n - 1:
                h = np.maximum(h, 0)
            acts.append(h)
        z = h - h.max(1, keepdims=True)
        e = np.exp(z)
        s = e.sum(1, keepdims=True)
        n = x.shape[0]
        loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
        g = e / s
        g[np.arange(n), y] -= 1
        g /= n
        grads: dict[str, np.ndarray] = {}
        for i in reversed(range(self.n)):
            grads[f"layers.{i}.weight"] = g.T @ acts[i]
            grads[f"layers.{i}.bias"] = g.sum(0)
            if i:
                g = (g @ self.p[f"layers.{i}.weight"]) * (acts[i] > 0)
        self.t += 1
        bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for k, gk in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * gk
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * gk * gk
            self.p[k] -= self.lr / bc1 * self.m[k] / (np.sqrt(self.v[k]) / np.sqrt(bc2) + self.eps)
        return loss
