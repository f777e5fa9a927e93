"""Linear fusion: matmul + bias (+ activation) -> linear."""

from __future__ import annotations

import pytest

from lbdl_graph.passes.fuse_linear import fuse_linear
from tests.passes.util import check_pass, check_unchanged


def test_mlp_fuses_bias_and_activations() -> None:
    check_pass(fuse_linear, """
    graph mlp(%x: f32[N,4]):
      param %w1: f32[4,8]
      param %b1: f32[8]
      param %w2: f32[8,2]
      param %b2: f32[2]
      %0: f32[N,8] = matmul(%x, %w1)
      %1: f32[N,8] = add(%b1, %0)
      %2: f32[N,8] = relu(%1)
      %3: f32[N,2] = matmul(%2, %w2)
      %4: f32[N,2] = add(%3, %b2)
      %5: f32[N,2] = gelu[approximate='tanh'](%4)
      return %5
    """, """
    graph mlp(%x: f32[N,4]):
      param %w1: f32[4,8]
      param %b1: f32[8]
      param %w2: f32[8,2]
      param %b2: f32[2]
      %0: f32[N,8] = linear[activation='relu'](%x, %w1, %b1)
      %1: f32[N,2] = linear[activation='gelu_tanh'](%0, %w2, %b2)
      return %1
    """, stats={"matmul_add_to_linear": 2, "linear_relu": 1, "linear_gelu": 1})


def test_batched_input_and_activation_of_a_bias_free_linear() -> None:
    check_pass(fuse_linear, """
    graph g(%x: f32[2,3,4], %w: f32[4,5]):
      %0: f32[2,3,5] = linear[activation='none'](%x, %w)
      %1: f32[2,3,5] = gelu[approximate='none'](%0)
      return %1
    """, """
    graph g(%x: f32[2,3,4], %w: f32[4,5]):
      %0: f32[2,3,5] = linear[activation='gelu'](%x, %w)
      return %0
    """, stats={"linear_gelu": 1})


UNCHANGED = {
    # the bias is 2-D: not a per-row bias (Gemm-like linear takes [out] only)
    "bias_2d": """
      graph g(%x: f32[3,4], %w: f32[4,5], %b: f32[3,5]):
        %0: f32[3,5] = matmul(%x, %w)
        %1: f32[3,5] = add(%0, %b)
        return %1
    """,
    # the weight is batched
    "weight_3d": """
      graph g(%x: f32[2,3,4], %w: f32[2,4,5], %b: f32[5]):
        %0: f32[2,3,5] = matmul(%x, %w)
        %1: f32[2,3,5] = add(%0, %b)
        return %1
    """,
    # the product is used twice: fusing would compute it twice
    "shared_matmul": """
      graph g(%x: f32[3,4], %w: f32[4,5], %b: f32[5]):
        %0: f32[3,5] = matmul(%x, %w)
        %1: f32[3,5] = add(%0, %b)
        %2: f32[3,5] = mul(%0, %1)
        return %2
    """,
    # the pre-activation is a graph output
    "linear_is_output": """
      graph g(%x: f32[3,4], %w: f32[4,5]):
        %0: f32[3,5] = linear[activation='none'](%x, %w)
        %1: f32[3,5] = relu(%0)
        return %0, %1
    """,
    # integer matmuls stay matmuls
    "int": """
      graph g(%x: i64[3,4], %w: i64[4,5], %b: i64[5]):
        %0: i64[3,5] = matmul(%x, %w)
        %1: i64[3,5] = add(%0, %b)
        return %1
    """,
}


@pytest.mark.parametrize("text", UNCHANGED.values(), ids=UNCHANGED.keys())
def test_fuse_linear_leaves_alone(text: str) -> None:
    check_unchanged(fuse_linear, text)
