"""GELU fusion: the erf and tanh formulas -> gelu."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbdl_graph.passes.fuse_gelu import GELU_RULES, close_to, fuse_gelu
from tests.passes.util import check_pass, check_unchanged


def _erf_gelu(order: str, arg: str) -> str:
    """0.5 * x * (1 + erf(x / sqrt 2)) with the product associated as ``order``."""
    c = ("%0: f32[] = constant[value=tensor(f32[], 0.7071067690849304)]()" if arg == "mul"
         else "%0: f32[] = constant[value=tensor(f32[], 1.4142135381698608)]()")
    lines = [c, f"%1: f32[4] = {arg}(%x, %0)", "%2: f32[4] = erf(%1)",
             "%3: f32[] = constant[value=tensor(f32[], 1.0)]()", "%4: f32[4] = add(%3, %2)"]
    if order != "xy_div2":
        lines.append("%5: f32[] = constant[value=tensor(f32[], 0.5)]()")
    lines += {
        "half_x": ["%6: f32[4] = mul(%5, %x)", "%7: f32[4] = mul(%6, %4)"],
        "x_half": ["%6: f32[4] = mul(%4, %5)", "%7: f32[4] = mul(%x, %6)"],
        "xy_half": ["%6: f32[4] = mul(%x, %4)", "%7: f32[4] = mul(%5, %6)"],
        "xy_div2": ["%6: f32[4] = mul(%x, %4)",
                    "%8: f32[] = constant[value=tensor(f32[], 2.0)]()",
                    "%7: f32[4] = div(%6, %8)"],
    }[order]
    return "graph g(%x: f32[4]):\n" + "".join(f"  {ln}\n" for ln in lines) + "  return %7\n"


GELU = "graph g(%x: f32[4]):\n  %0: f32[4] = gelu[approximate='{}'](%x)\n  return %0\n"


@pytest.mark.parametrize("arg", ["div", "mul"])
@pytest.mark.parametrize("order", ["half_x", "x_half", "xy_half", "xy_div2"])
def test_erf_gelu_in_every_association(order: str, arg: str) -> None:
    check_pass(fuse_gelu, _erf_gelu(order, arg), GELU.format("none"),
               stats={f"gelu_erf_{arg}_{order}": 1})


def test_tanh_gelu_with_a_cube_written_as_products() -> None:
    check_pass(fuse_gelu, """
    graph g(%x: f32[4]):
      %0: f32[4] = mul(%x, %x)
      %1: f32[4] = mul(%0, %x)
      %2: f32[] = constant[value=tensor(f32[], 0.044715)]()
      %3: f32[4] = mul(%1, %2)
      %4: f32[4] = add(%x, %3)
      %5: f32[] = constant[value=tensor(f32[], 0.7978845834732056)]()
      %6: f32[4] = mul(%5, %4)
      %7: f32[4] = tanh(%6)
      %8: f32[] = constant[value=tensor(f32[], 1.0)]()
      %9: f32[4] = add(%7, %8)
      %10: f32[] = constant[value=tensor(f32[], 0.5)]()
      %11: f32[4] = mul(%10, %x)
      %12: f32[4] = mul(%11, %9)
      return %12
    """, GELU.format("tanh"), stats={"gelu_tanh_mul_half_x": 1})


def test_wrong_constant_is_not_gelu() -> None:
    check_unchanged(fuse_gelu, _erf_gelu("half_x", "div").replace("1.4142135381698608",
                                                                 "1.5"))


def test_close_to_uses_the_constant_dtype() -> None:
    near = close_to(math.sqrt(2))
    assert near(np.array(math.sqrt(2), np.float32)) and near(np.array(1.41421356237, np.float64))
    assert near(np.array(1.4142, np.float16)) and not near(np.array(1.4142, np.float32))
    assert not near(np.array([1.4142135, 1.4142135], np.float32))
    assert len(list(GELU_RULES)) == 16
