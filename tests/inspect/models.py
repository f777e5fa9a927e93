"""Small hand-built graphs with known parameter and MAC counts for the inspection tests."""

from __future__ import annotations

import itertools

import numpy as np

from lbdl_graph import Graph, GraphBuilder, Value, ops


def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def linear(b: GraphBuilder, name: str, x: Value, n_in: int, n_out: int) -> Value:
    """``x @ W + b`` in scope ``name`` with parameters ``<scope>.weight`` / ``<scope>.bias``."""
    with b.scope(name):
        w = b.param(f"{b.scope_name}.weight", _zeros(n_in, n_out))
        bias = b.param(f"{b.scope_name}.bias", _zeros(n_out))
        return ops.add(ops.matmul(x, w), bias)


def mlp(sizes: tuple[int, ...] = (784, 256, 10)) -> Graph:
    """An MLP with relu between layers fc1, fc2, ...; input ``x: f32[N, sizes[0]]``."""
    with GraphBuilder("mlp") as b:
        h = b.input("x", "f32", ("N", sizes[0]))
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            h = linear(b, f"fc{i + 1}", h, n_in, n_out)
            if i < len(sizes) - 2:
                with b.scope(f"fc{i + 1}"):
                    h = ops.relu(h)
        return b.build([h])


def lenet() -> Graph:
    """LeNet-5 on 28x28 inputs (conv 5x5 pad 2, pool, conv 5x5, pool, 3 linear layers)."""
    with GraphBuilder("lenet") as b:
        x = b.input("x", "f32", ("N", 1, 28, 28))
        with b.scope("conv1"):
            x = ops.conv(x, b.param("conv1.weight", _zeros(6, 1, 5, 5)),
                         b.param("conv1.bias", _zeros(6)), pads=(2, 2, 2, 2))
        x = ops.relu(x)
        with b.scope("pool1"):
            x, _ = ops.max_pool(x, kernel_shape=(2, 2), strides=(2, 2))
        with b.scope("conv2"):
            x = ops.conv(x, b.param("conv2.weight", _zeros(16, 6, 5, 5)),
                         b.param("conv2.bias", _zeros(16)))
        x = ops.relu(x)
        with b.scope("pool2"):
            x, _ = ops.max_pool(x, kernel_shape=(2, 2), strides=(2, 2))
        x = ops.reshape(x, shape=(0, -1))
        x = ops.relu(linear(b, "fc1", x, 400, 120))
        x = ops.relu(linear(b, "fc2", x, 120, 84))
        return b.build([linear(b, "fc3", x, 84, 10)])


def attention_block(d: int = 16, heads: int = 2, t: int = 8, layers: int = 1) -> Graph:
    """Pre-norm transformer blocks ``layers.<i>.{ln1,attn.{q,k,v,o}_proj,ln2,mlp.fc1,mlp.fc2}``
    with parallel q/k/v projections and residual connections."""
    with GraphBuilder("block") as b:
        x = b.input("x", "f32", ("N", t, d))
        for i in range(layers):
            with b.scope(f"layers.{i}"):
                with b.scope("ln1"):
                    y = ops.layer_norm(x, b.param(f"{b.scope_name}.weight", _zeros(d)))
                with b.scope("attn"):
                    q, k, v = (linear(b, f"{n}_proj", y, d, d) for n in "qkv")

                    def split(z: Value) -> Value:
                        z = ops.reshape(z, shape=(0, 0, heads, d // heads))
                        return ops.transpose(z, perm=(0, 2, 1, 3))

                    q, k, v = split(q), split(k), split(v)
                    s = ops.softmax(ops.matmul(q, ops.transpose(k, perm=(0, 1, 3, 2))))
                    a = ops.transpose(ops.matmul(s, v), perm=(0, 2, 1, 3))
                    a = linear(b, "o_proj", ops.reshape(a, shape=(0, 0, d)), d, d)
                x = ops.add(x, a)
                with b.scope("ln2"):
                    y = ops.layer_norm(x, b.param(f"{b.scope_name}.weight", _zeros(d)))
                with b.scope("mlp"):
                    y = linear(b, "fc2", ops.gelu(linear(b, "fc1", y, d, 4 * d)), 4 * d, d)
                x = ops.add(x, y)
        return b.build([x])


def chain(n: int, *, scope_every: int = 0) -> Graph:
    """``n`` alternating tanh/relu nodes; with ``scope_every`` they are grouped in scopes."""
    with GraphBuilder("chain") as b:
        x = b.input("x", "f32", ("N", 4))
        for i in range(n):
            if scope_every:
                with b.scope(f"blk{i // scope_every}"):
                    x = ops.tanh(x) if i % 2 else ops.relu(x)
            else:
                x = ops.tanh(x) if i % 2 else ops.relu(x)
        return b.build([x])
