"""Attention fusion: softmax(q k^T * scale + mask) v -> attention."""

from __future__ import annotations

import numpy as np
import pytest

from lbdl_graph.passes.fuse_attention import fuse_attention, is_causal_mask
from tests.passes.util import check_pass, check_unchanged, graph_of

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


CAUSAL_WHERE = """
graph att(%q: f32[B,2,T,4], %k: f32[B,2,T,4], %v: f32[B,2,T,4]):
  %0: f32[B,2,4,T] = transpose[perm=(0, 1, 3, 2)](%k)
  %1: f32[B,2,T,T] = matmul(%q, %0)
  %2: f32[] = constant[value=tensor(f32[], 0.5)]()
  %3: f32[B,2,T,T] = mul(%1, %2)
  %4: i64[B,2,T,T] = iota_like[axis=2](%3)
  %5: i64[B,2,T,T] = iota_like[axis=3](%3)
  %6: bool[B,2,T,T] = less_equal(%5, %4)
  %7: f32[] = constant[value=tensor(f32[], -3.4028234663852886e+38)]()
  %8: f32[B,2,T,T] = where(%6, %3, %7)
  %9: f32[B,2,T,T] = softmax[axis=-1](%8)
  %10: f32[B,2,T,4] = matmul(%9, %v)
  return %10
"""
CAUSAL = """
graph att(%q: f32[B,2,T,4], %k: f32[B,2,T,4], %v: f32[B,2,T,4]):
  %0: f32[B,2,T,4] = attention[scale=0.5, causal=True](%q, %k, %v)
  return %0
"""


def _edit(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize(("edits", "rule"), [
    ((), "attention_mul_scale_where_keep"),
    # the same condition written the other way round
    ((("less_equal(%5, %4)", "greater_equal(%4, %5)"),), "attention_mul_scale_where_keep"),
    # where(hide, low, scores)
    ((("less_equal(%5, %4)", "greater(%5, %4)"), ("where(%6, %3, %7)", "where(%6, %7, %3)")),
     "attention_mul_scale_where_hide"),
], ids=["keep", "keep_swapped", "hide"])
def test_causal_mask_built_from_iotas(edits: tuple[tuple[str, str], ...], rule: str) -> None:
    """The DSL's causal mask (a where on iotas of the scores, for a symbolic length)."""
    check_pass(fuse_attention, _edit(CAUSAL_WHERE, *edits), CAUSAL, stats={rule: 1})


LOOK_ALIKE_MASKS = {
    # keys j >= i kept: the upper triangle
    "anti_causal": ("less_equal(%5, %4)", "less_equal(%4, %5)"),
    # a fill that does not hide (exp(-10) is not 0)
    "small_fill": ("-3.4028234663852886e+38", "-10.0"),
    # both iotas along the same axis
    "same_axis": ("iota_like[axis=3](%3)", "iota_like[axis=2](%3)"),
}


@pytest.mark.parametrize("edit", LOOK_ALIKE_MASKS.values(), ids=LOOK_ALIKE_MASKS.keys())
def test_causal_look_alikes_are_not_fused(edit: tuple[str, str]) -> None:
    assert edit[0] in CAUSAL_WHERE
    check_unchanged(fuse_attention, CAUSAL_WHERE.replace(*edit))


MASKED_WHERE = (("%v: f32[B,2,T,4])", "%v: f32[B,2,T,4], %m: f32[T,T])"),
                ("  %4: i64", "  %11: f32[B,2,T,T] = add(%3, %m)\n  %4: i64"),
                ("iota_like[axis=2](%3)", "iota_like[axis=2](%11)"),
                ("iota_like[axis=3](%3)", "iota_like[axis=3](%11)"),
                ("where(%6, %3, %7)", "where(%6, %11, %7)"))


EYE = ("tensor(f32[4,4], [[0.25, 0.0, 0.0, 0.0], [0.0, 0.25, 0.0, 0.0], [0.0, 0.0, 0.25, 0.0], "
       "[0.0, 0.0, 0.0, 0.25]])")


def test_causal_where_keeps_a_finite_constant_mask() -> None:
    text = _edit(CAUSAL_WHERE, *MASKED_WHERE[1:],
                 ("  %11:", f"  %m: f32[4,4] = constant[value={EYE}]()\n  %11:"))
    text = text.replace("T", "4")  # a constant mask needs a static length
    check_pass(fuse_attention, text, f"""
    graph att(%q: f32[B,2,4,4], %k: f32[B,2,4,4], %v: f32[B,2,4,4]):
      %0: f32[4,4] = constant[value={EYE}]()
      %1: f32[B,2,4,4] = attention[scale=0.5, causal=True](%q, %k, %v, %0)
      return %1
    """, stats={"attention_mul_scale_mask_where_keep": 1})


def test_causal_where_with_an_input_mask_is_not_fused() -> None:
    # a mask row of -inf would leave no visible key, where the finite fill gives NaN-free
    # uniform weights: only finite constant masks may go along
    check_unchanged(fuse_attention, _edit(CAUSAL_WHERE, *MASKED_WHERE))


def test_float16_lowest_value_hides_like_minus_infinity() -> None:
    text = CAUSAL_WHERE.replace("f32", "f16").replace("-3.4028234663852886e+38", "-65504.0")
    r = fuse_attention(graph_of(text))
    assert dict(r.stats) == {"attention_mul_scale_where_keep": 1}
    assert [n.op.name for n in r.graph.nodes] == ["attention"]
    check_unchanged(fuse_attention, text.replace("-65504.0", "-60000.0"))
