"""Batch-norm folding into the convolution before it."""

from __future__ import annotations

from lbdl_graph.passes.fold_batch_norm import fold_batch_norm
from tests.passes.util import check_pass, check_unchanged

STATS = ("scale", "shift", "mean", "var")


def test_fold_into_conv_with_bias() -> None:
    r = check_pass(fold_batch_norm, """
    graph net(%x: f32[N,3,6,6]):
      param %w: f32[4,3,3,3]
      param %b: f32[4]
      buffer %scale: f32[4]
      buffer %shift: f32[4]
      buffer %mean: f32[4]
      buffer %var: f32[4]
      %0: f32[N,4,4,4] = conv[strides=None, pads=None, dilations=None, group=1](%x, %w, %b)
      %1: f32[N,4,4,4] = batch_norm[epsilon=1e-05](%0, %scale, %shift, %mean, %var)
      %2: f32[N,4,4,4] = relu(%1)
      return %2
    """, """
    graph net(%x: f32[N,3,6,6]):
      param %w.folded: f32[4,3,3,3]
      param %b.folded: f32[4]
      %0: f32[N,4,4,4] = conv[strides=None, pads=None, dilations=None, group=1](%x, %w.folded, %b.folded)
      %1: f32[N,4,4,4] = relu(%0)
      return %1
    """, stats={"conv_batch_norm": 1}, positive=["var"], rtol=1e-4, atol=1e-5)  # noqa: E501
    assert all(p.trainable for p in r.graph.params)


def test_fold_into_grouped_conv_without_bias() -> None:
    check_pass(fold_batch_norm, """
    graph net(%x: f32[N,4,6,6]):
      buffer %w: f32[4,2,1,1]
      buffer %scale: f32[4]
      buffer %shift: f32[4]
      buffer %mean: f32[4]
      buffer %var: f32[4]
      %0: f32[N,4,6,6] = conv[strides=None, pads=None, dilations=None, group=2](%x, %w, _)
      %1: f32[N,4,6,6] = batch_norm[epsilon=0.001](%0, %scale, %shift, %mean, %var)
      return %1
    """, """
    graph net(%x: f32[N,4,6,6]):
      buffer %w.folded: f32[4,2,1,1]
      buffer %w.folded_bias: f32[4]
      %0: f32[N,4,6,6] = conv[strides=None, pads=None, dilations=None, group=2](%x, %w.folded, %w.folded_bias)
      return %0
    """, stats={"conv_batch_norm": 1}, positive=["var"], rtol=1e-4, atol=1e-5)  # noqa: E501


def test_statistics_computed_at_run_time_are_not_folded() -> None:
    check_unchanged(fold_batch_norm, """
    graph net(%x: f32[N,3,6,6], %mean: f32[4], %var: f32[4]):
      param %w: f32[4,3,3,3]
      param %scale: f32[4]
      param %shift: f32[4]
      %0: f32[N,4,4,4] = conv[strides=None, pads=None, dilations=None, group=1](%x, %w, _)
      %1: f32[N,4,4,4] = batch_norm[epsilon=1e-05](%0, %scale, %shift, %mean, %var)
      return %1
    """)
