"""LayerNorm fusion: the written-out normalisation -> layer_norm."""

from __future__ import annotations

import pytest

from lbdl_graph.passes.fuse_layer_norm import fuse_layer_norm
from tests.passes.util import check_pass, check_unchanged

LN = """
graph ln(%x: f32[B,T,8]):
  param %gamma: f32[8]
  param %beta: f32[8]
  %0: f32[B,T,1] = reduce_mean[axes=(-1,), keepdims=True](%x)
  %1: f32[B,T,8] = sub(%x, %0)
  %2: f32[B,T,8] = mul(%1, %1)
  %3: f32[B,T,1] = reduce_mean[axes=(2,), keepdims=True](%2)
  %4: f32[] = constant[value=tensor(f32[], 1e-05)]()
  %5: f32[B,T,1] = add(%4, %3)
  %6: f32[B,T,1] = sqrt(%5)
  %7: f32[B,T,8] = div(%1, %6)
  %8: f32[B,T,8] = mul(%gamma, %7)
  %9: f32[B,T,8] = add(%8, %beta)
  return %9
"""


def test_affine_layer_norm_with_static_width() -> None:
    # the bare normalisation fuses first (scale 1), then absorbs the scale and the shift
    check_pass(fuse_layer_norm, LN, """
    graph ln(%x: f32[B,T,8]):
      param %gamma: f32[8]
      param %beta: f32[8]
      %0: f32[B,T,8] = layer_norm[axis=-1, epsilon=9.999999747378752e-06](%x, %gamma, %beta)
      return %0
    """, stats={"layer_norm_mul": 1, "layer_norm_scale": 1, "layer_norm_shift": 1},
        rtol=1e-4, atol=1e-5)


def test_scaled_layer_norm_with_symbolic_width() -> None:
    check_pass(fuse_layer_norm, """
    graph ln(%x: f32[B,D], %gamma: f32[D]):
      %0: f32[B,1] = reduce_mean[axes=(-1,), keepdims=True](%x)
      %1: f32[B,D] = sub(%x, %0)
      %2: f32[] = constant[value=tensor(f32[], 2.0)]()
      %3: f32[B,D] = pow(%1, %2)
      %4: f32[B,1] = reduce_mean[axes=(-1,), keepdims=True](%3)
      %5: f32[] = constant[value=tensor(f32[], 1e-05)]()
      %6: f32[B,1] = add(%4, %5)
      %7: f32[B,1] = sqrt(%6)
      %8: f32[B,D] = div(%1, %7)
      %9: f32[B,D] = mul(%8, %gamma)
      return %9
    """, """
    graph ln(%x: f32[B,D], %gamma: f32[D]):
      %0: f32[B,D] = layer_norm[axis=-1, epsilon=9.999999747378752e-06](%x, %gamma, _)
      return %0
    """, stats={"layer_norm_pow_scale": 1}, rtol=1e-4, atol=1e-5)


LOOK_ALIKES = {
    # (m - x) / std is minus the normalisation
    "reversed_centering": [("sub(%x, %0)", "sub(%0, %x)")],
    # the variance is taken over other axes than the mean
    "other_axes": [("%3: f32[B,T,1] = reduce_mean[axes=(2,)",
                    "%3: f32[B,1,1] = reduce_mean[axes=(1, 2)"),
                   ("%5: f32[B,T,1]", "%5: f32[B,1,1]"), ("%6: f32[B,T,1]", "%6: f32[B,1,1]")],
    # epsilon is computed at run time
    "eps_not_constant": [("graph ln(%x: f32[B,T,8])", "graph ln(%x: f32[B,T,8], %e: f32[])"),
                         ("constant[value=tensor(f32[], 1e-05)]()", "exp(%e)")],
}


@pytest.mark.parametrize("edits", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_look_alikes_are_not_layer_norms(edits: list[tuple[str, str]]) -> None:
    text = LN
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    check_unchanged(fuse_layer_norm, text)
