"""Convolution fusion: conv + residual add + relu -> fused_conv."""

from __future__ import annotations

from lbdl_graph.passes.fuse_conv import fuse_conv
from tests.passes.util import check_pass, check_unchanged

CONV = "conv[strides=None, pads=(1, 1, 1, 1), dilations=None, group=1]"
FUSED = "fused_conv[strides=None, pads=(1, 1, 1, 1), dilations=None, group=1, activation='relu']"


def test_residual_block() -> None:
    check_pass(fuse_conv, f"""
    graph net(%x: f32[N,4,6,6]):
      param %w1: f32[4,4,3,3]
      param %b1: f32[4]
      param %w2: f32[4,4,3,3]
      %0: f32[N,4,6,6] = {CONV}(%x, %w1, %b1)
      %1: f32[N,4,6,6] = relu(%0)
      %2: f32[N,4,6,6] = {CONV}(%1, %w2, _)
      %3: f32[N,4,6,6] = add(%x, %2)
      %4: f32[N,4,6,6] = relu(%3)
      return %4
    """, f"""
    graph net(%x: f32[N,4,6,6]):
      param %w1: f32[4,4,3,3]
      param %b1: f32[4]
      param %w2: f32[4,4,3,3]
      %0: f32[N,4,6,6] = {FUSED}(%x, %w1, %b1)
      %1: f32[N,4,6,6] = {FUSED}(%0, %w2, _, %x)
      return %1
    """, stats={"conv_relu_to_fused_conv": 1, "conv_add_to_fused_conv": 1,
                "fused_conv_relu": 1}, rtol=1e-4, atol=1e-5)


def test_residual_that_would_broadcast_the_conv_output_is_kept() -> None:
    check_unchanged(fuse_conv, f"""
    graph net(%x: f32[1,4,6,6], %r: f32[2,4,6,6]):
      param %w: f32[4,4,3,3]
      %0: f32[1,4,6,6] = {CONV}(%x, %w, _)
      %1: f32[2,4,6,6] = add(%0, %r)
      return %1
    """)
