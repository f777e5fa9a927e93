"""Attention fusion: softmax(q k^T * scale + mask) v -> attention."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.passes.fuse_attention import fuse_attention, is_causal_mask
from tests.passes.util import check_pass, check_unchanged

MASKED = """
graph att(%q: f32[B,2,T,4], %k: f32[B,2,T,4], %v: f32[B,2,T,4], %mask: f32[B,1,1,T]):
  %0: f32[B,2,4,T] = transpose[perm=(0, 1, 3, 2)](%k)
  %1: f32[B,2,T,T] = matmul(%q, %0)
  %2: f32[] = constant[value=tensor(f32[], 2.0)]()
  %3: f32[B,2,T,T] = div(%1, %2)
  %4: f32[B,2,T,T] = add(%mask, %3)
  %5: f32[B,2,T,T] = softmax[axis=3](%4)
  %6: f32[B,2,T,4] = matmul(%5, %v)
  return %6
"""


def test_scaled_masked_attention() -> None:
    check_pass(fuse_attention, MASKED, """
    graph att(%q: f32[B,2,T,4], %k: f32[B,2,T,4], %v: f32[B,2,T,4], %mask: f32[B,1,1,T]):
      %0: f32[B,2,T,4] = attention[scale=0.5, causal=False](%q, %k, %v, %mask)
      return %0
    """, stats={"attention_div_scale_mask": 1})


def test_causal_self_attention_from_one_projection() -> None:
    # simplify merged the head split and k's transpose into one transpose of the projection:
    # k becomes that input transposed back
    check_pass(fuse_attention, """
    graph att(%x: f32[B,3,8]):
      %0: f32[B,3,2,4] = reshape[shape=(0, 0, 2, 4)](%x)
      %1: f32[B,2,3,4] = transpose[perm=(0, 2, 1, 3)](%0)
      %2: f32[B,2,4,3] = transpose[perm=(0, 2, 3, 1)](%0)
      %3: f32[B,2,3,3] = matmul(%1, %2)
      %4: f32[] = constant[value=tensor(f32[], 0.5)]()
      %5: f32[B,2,3,3] = mul(%3, %4)
      %6: f32[3,3] = constant[value=tensor(f32[3,3], [[0.0, -inf, -inf], [0.0, 0.0, -inf], [0.0, 0.0, 0.0]])]()
      %7: f32[B,2,3,3] = add(%5, %6)
      %8: f32[B,2,3,3] = softmax[axis=-1](%7)
      %9: f32[B,2,3,4] = matmul(%8, %1)
      return %9
    """, """
    graph att(%x: f32[B,3,8]):
      %0: f32[B,3,2,4] = reshape[shape=(0, 0, 2, 4)](%x)
      %1: f32[B,2,3,4] = transpose[perm=(0, 2, 1, 3)](%0)
      %2: f32[B,2,3,4] = transpose[perm=(0, 2, 1, 3)](%0)
      %3: f32[B,2,3,4] = attention[scale=0.5, causal=True](%1, %2, %1)
      return %3
    """, stats={"attention_mul_scale_mask": 1})  # noqa: E501


def test_unscaled_unmasked_attention() -> None:
    check_pass(fuse_attention, """
    graph att(%q: f32[5,4], %k: f32[6,4], %v: f32[6,3]):
      %0: f32[4,6] = transpose[perm=None](%k)
      %1: f32[5,6] = matmul(%q, %0)
      %2: f32[5,6] = softmax[axis=-1](%1)
      %3: f32[5,3] = matmul(%2, %v)
      return %3
    """, """
    graph att(%q: f32[5,4], %k: f32[6,4], %v: f32[6,3]):
      %0: f32[5,3] = attention[scale=1.0, causal=False](%q, %k, %v)
      return %0
    """, stats={"attention_none_scale": 1})


LOOK_ALIKES = {
    # softmax over the query axis is not attention
    "softmax_axis": ("softmax[axis=3]", "softmax[axis=2]"),
    # the attention weights are also returned
    "weights_used": ("  return %6\n", "  return %6, %5\n"),
}


@pytest.mark.parametrize("edit", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_look_alikes_are_not_attention(edit: tuple[str, str]) -> None:
    assert edit[0] in MASKED
    check_unchanged(fuse_attention, MASKED.replace(*edit))


def test_is_causal_mask() -> None:
    m = np.triu(np.full((4, 4), -np.inf, np.float32), 1)
    assert is_causal_mask(m) and is_causal_mask(np.where(np.isinf(m), -1e9, 0.0)[None])
    assert not is_causal_mask(m.T) and not is_causal_mask(np.zeros((4, 4), np.float32))
    assert not is_causal_mask(np.where(np.isinf(m), -10.0, 0.0))
    assert not is_causal_mask(m[:3])
