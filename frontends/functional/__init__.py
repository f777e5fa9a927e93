"""The functional API, mirroring ``torch.nn.functional``: ``import lbdl_graph.frontends.functional
as F``. Every function adds nodes to the active trace and returns symbolic tensors."""

from __future__ import annotations

from .activation import (
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from .attention import attention, causal_mask, scaled_dot_product_attention
from .capsule import dynamic_routing, margin_loss, squash
from .conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d, pad
from .dropout import dropout, dropout1d, dropout2d
from .linear import embedding, linear, one_hot
from .loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    contrastive_loss,
    cross_entropy,
    info_nce,
    l1_loss,
    mse_loss,
    nll_loss,
    pairwise_distance,
    triplet_margin_loss,
)
from .manipulation import (
    cat,
    chunk,
    concat,
    full_like,
    matmul,
    ones_like,
    split,
    stack,
    where,
    zeros_like,
)
from .norm import batch_norm, layer_norm
from .pooling import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    avg_pool1d,
    avg_pool2d,
    global_avg_pool,
    max_pool1d,
    max_pool2d,
)

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "attention",
    "avg_pool1d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cat",
    "causal_mask",
    "chunk",
    "concat",
    "contrastive_loss",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "cross_entropy",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dynamic_routing",
    "embedding",
    "full_like",
    "gelu",
    "global_avg_pool",
    "info_nce",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "margin_loss",
    "matmul",
    "max_pool1d",
    "max_pool2d",
    "mse_loss",
    "nll_loss",
    "one_hot",
    "ones_like",
    "pad",
    "pairwise_distance",
    "relu",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "split",
    "squash",
    "stack",
    "tanh",
    "triplet_margin_loss",
    "where",
    "zeros_like",
]
