"""Shape simplification: one golden Before/Expected case per rule, and look-alikes it must keep."""

from __future__ import annotations

import pytest

from lbdl_graph.passes.simplify_shapes import simplify_shapes
from tests.passes.util import check_pass, check_unchanged

EXP_X = """
graph g(%x: {t}):
  %0: {t} = exp(%x)
  return %0
"""


def _case(rule: str, t: str, line: str, extra_inputs: str = "") -> tuple[str, str, str]:
    before = (f"graph g(%x: {t}{extra_inputs}):\n  %0: {t} = {line}\n"
              f"  %1: {t} = exp(%0)\n  return %1\n")
    expected = EXP_X.format(t=t).replace("%x: " + t, f"%x: {t}{extra_inputs}")
    return rule, before, expected


INT_MAX = 2**63 - 1
CASES = [
    _case("reshape_same", "f32[N,6]", "reshape[shape=(0, -1)](%x)"),
    _case("squeeze_same", "f32[2,3]", "squeeze[axes=None](%x)"),
    _case("expand_same", "f32[2,3]", "expand[shape=(1, 3)](%x)"),
    _case("broadcast_like_same", "f32[2,3]", "broadcast_like(%x, %y)", ", %y: f32[3]"),
    _case("slice_full", "f32[N,4]",
          f"slice[starts=(0, 0), ends=({INT_MAX}, 4), axes=None, steps=None](%x)"),
    _case("tile_ones", "f32[2,3]", "tile[repeats=(1, 1)](%x)"),
    _case("pad_zero", "f32[2,3]", "pad[pads=(0, 0, 0, 0), mode='constant', value=0.0](%x)"),
    _case("transpose_identity", "f32[2,3]", "transpose[perm=(0, 1)](%x)"),
    _case("concat_single", "f32[2,3]", "concat[axis=1](%x)"),
    ("unsqueeze_squeeze", """
     graph g(%x: f32[2,1,3]):
       %0: f32[2,3] = squeeze[axes=(1,)](%x)
       %1: f32[2,1,3] = unsqueeze[axes=(1,)](%0)
       %2: f32[2,1,3] = exp(%1)
       return %2
     """, EXP_X.format(t="f32[2,1,3]")),
    # the unsqueeze has another user and stays; the output keeps its name through an identity
    ("squeeze_unsqueeze", """
     graph g(%x: f32[2,3]):
       %0: f32[2,1,3] = unsqueeze[axes=(1,)](%x)
       %1: f32[2,3] = squeeze[axes=(1,)](%0)
       %2: f32[2,1,3] = exp(%0)
       return %1, %2
     """, """
     graph g(%x: f32[2,3]):
       %0: f32[2,1,3] = unsqueeze[axes=(1,)](%x)
       %1: f32[2,3] = identity(%x)
       %2: f32[2,1,3] = exp(%0)
       return %1, %2
     """),
]


@pytest.mark.parametrize(("rule", "before", "expected"), CASES, ids=[c[0] for c in CASES])
def test_simplify_shapes_rule(rule: str, before: str, expected: str) -> None:
    check_pass(simplify_shapes, before, expected, stats={rule: 1})


UNCHANGED = {
    # same type, but the data moves: these are not identities
    "transpose_square": "%0: f32[3,3] = transpose[perm=(1, 0)](%x)",
    "slice_reversed": f"%0: f32[3,3] = slice[starts=(-1,), ends=({-INT_MAX},), axes=(0,), "
                      "steps=(-1,)](%x)",
    "pad_shifting": "%0: f32[3,3] = pad[pads=(1, 0, -1, 0), mode='constant', value=0.0](%x)",
    "reshape_other_shape": "%0: f32[9] = reshape[shape=(9,)](%x)",
}


@pytest.mark.parametrize("line", UNCHANGED.values(), ids=UNCHANGED.keys())
def test_simplify_shapes_leaves_alone(line: str) -> None:
    t = line.split(" = ")[0].split(": ")[1]
    check_unchanged(simplify_shapes,
                    f"graph g(%x: f32[3,3]):\n  {line}\n  %1: {t} = exp(%0)\n  return %1\n")
