"""Algebraic simplification: one golden Before/Expected case per rule."""

from __future__ import annotations

import pytest

from lbdl_graph import dtypes
from lbdl_graph.passes.simplify import lossless_cast, simplify
from tests.passes.util import check_pass, check_unchanged

CASES = [
    ("mul_one", """
     graph g(%x: f32[2,3]):
       %0: f32[] = constant[value=tensor(f32[], 1.0)]()
       %1: f32[2,3] = mul(%0, %x)
       %2: f32[2,3] = exp(%1)
       return %2
     """, """
     graph g(%x: f32[2,3]):
       %0: f32[2,3] = exp(%x)
       return %0
     """, {"mul_one": 1}),
    ("add_zero", """
     graph g(%x: f32[2,3]):
       %0: f32[3] = constant[value=tensor(f32[3], [0.0, 0.0, 0.0])]()
       %1: f32[2,3] = add(%x, %0)
       %2: f32[2,3] = exp(%1)
       return %2
     """, """
     graph g(%x: f32[2,3]):
       %0: f32[2,3] = exp(%x)
       return %0
     """, {"add_zero": 1}),
    ("sub_zero", """
     graph g(%x: i64[4]):
       %0: i64[] = constant[value=tensor(i64[], 0)]()
       %1: i64[4] = sub(%x, %0)
       %2: i64[4] = mul(%1, %1)
       return %2
     """, """
     graph g(%x: i64[4]):
       %0: i64[4] = mul(%x, %x)
       return %0
     """, {"sub_zero": 1}),
    ("div_one", """
     graph g(%x: f32[4]):
       %0: f32[] = constant[value=tensor(f32[], 1.0)]()
       %1: f32[4] = div(%x, %0)
       %2: f32[4] = exp(%1)
       return %2
     """, """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       return %0
     """, {"div_one": 1}),
    ("neg_neg", """
     graph g(%x: f32[4]):
       %0: f32[4] = neg(%x)
       %1: f32[4] = neg(%0)
       %2: f32[4] = exp(%1)
       return %2
     """, """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       return %0
     """, {"neg_neg": 1}),
    ("transpose_transpose", """
     graph g(%x: f32[2,3,4]):
       %0: f32[3,4,2] = transpose[perm=(1, 2, 0)](%x)
       %1: f32[4,3,2] = transpose[perm=(1, 0, 2)](%0)
       %2: f32[2,4,3] = transpose[perm=(0, 2, 1)](%x)
       %3: f32[2,3,4] = transpose[perm=(0, 2, 1)](%2)
       %4: f32[2,3,4] = exp(%3)
       return %1, %4
     """, """
     graph g(%x: f32[2,3,4]):
       %0: f32[4,3,2] = transpose[perm=(2, 1, 0)](%x)
       %1: f32[2,3,4] = exp(%x)
       return %0, %1
     """, {"transpose_transpose": 2}),
    ("reshape_reshape", """
     graph g(%x: f32[N,6]):
       %0: f32[N,2,3] = reshape[shape=(0, 2, 3)](%x)
       %1: f32[N,3,2] = reshape[shape=(-1, 3, 2)](%0)
       %2: f32[N,6] = reshape[shape=(0, 6)](%1)
       %3: f32[N,6] = exp(%2)
       %4: f32[N,3,2] = exp(%1)
       return %3, %4
     """, """
     graph g(%x: f32[N,6]):
       %0: f32[N,3,2] = reshape[shape=(-1, 3, 2)](%x)
       %1: f32[N,6] = exp(%x)
       %2: f32[N,3,2] = exp(%0)
       return %1, %2
     """, {"reshape_reshape": 2}),
    ("cast_cast", """
     graph g(%x: f32[4], %i: i32[4]):
       %0: f64[4] = cast[to=f64](%x)
       %1: f32[4] = cast[to=f32](%0)
       %2: f16[4] = cast[to=f16](%x)
       %3: f32[4] = cast[to=f32](%2)
       %4: f64[4] = cast[to=f64](%i)
       %5: i64[4] = cast[to=i64](%4)
       %6: f32[4] = add(%1, %3)
       return %6, %5
     """, """
     graph g(%x: f32[4], %i: i32[4]):
       %0: f16[4] = cast[to=f16](%x)
       %1: f32[4] = cast[to=f32](%0)
       %2: i64[4] = cast[to=i64](%i)
       %3: f32[4] = add(%x, %1)
       return %3, %2
     """, {"cast_cast": 2}),
    ("cast_same", """
     graph g(%x: f32[4]):
       %0: f32[4] = cast[to=f32](%x)
       %1: f32[4] = exp(%0)
       return %1
     """, """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       return %0
     """, {"cast_same": 1}),
    ("identity", """
     graph g(%x: f32[4]):
       %0: f32[4] = identity(%x)
       %1: f32[4] = exp(%0)
       %2: f32[4] = identity(%1)
       return %2
     """, """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       return %0
     """, {"identity": 1, "output_identity": 1}),
    # the output identity goes: its producer writes the output, other readers read it there
    ("output_identity", """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       %1: f32[4] = identity(%0)
       %2: f32[4] = neg(%0)
       return %1, %2
     """, """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       %1: f32[4] = neg(%0)
       return %0, %1
     """, {"output_identity": 1}),
    # two outputs of one value: the first takes it over, the second stays a copy of the first
    ("output_identity_twice", """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       %1: f32[4] = identity(%0)
       %2: f32[4] = identity(%0)
       return %1, %2
     """, """
     graph g(%x: f32[4]):
       %0: f32[4] = exp(%x)
       %1: f32[4] = identity(%0)
       return %0, %1
     """, {"output_identity": 1}),
]


@pytest.mark.parametrize(("rule", "before", "expected", "stats"), CASES, ids=[c[0] for c in CASES])
def test_simplify_rule(rule: str, before: str, expected: str, stats: dict[str, int]) -> None:
    check_pass(simplify, before, expected, stats=stats)


UNCHANGED = {
    # the constant broadcasts x to a bigger shape: x alone would have the wrong type
    "mul_one_broadcasting": """
      graph g(%x: f32[3]):
        %0: f32[2,3] = constant[value=tensor(f32[2,3], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])]()
        %1: f32[2,3] = mul(%x, %0)
        return %1
    """,
    "mul_not_one": """
      graph g(%x: f32[3]):
        %0: f32[] = constant[value=tensor(f32[], 1.5)]()
        %1: f32[3] = mul(%x, %0)
        return %1
    """,
    # f32 -> f16 loses bits, so the round trip is not the identity
    "cast_lossy": """
      graph g(%x: f32[3]):
        %0: f16[3] = cast[to=f16](%x)
        %1: f32[3] = cast[to=f32](%0)
        return %1
    """,
    # int32 -> f64 -> int8 is not int32 -> int8 for values out of int8's range
    "cast_int_float_narrow_int": """
      graph g(%x: i32[3]):
        %0: f64[3] = cast[to=f64](%x)
        %1: i8[3] = cast[to=i8](%0)
        return %1
    """,
    "identity_naming_an_output": """
      graph g(%x: f32[3]):
        %0: f32[3] = identity(%x)
        return %0
    """,
    # %0 is an output under its own name: the copy under a second name stays
    "identity_of_an_output": """
      graph g(%x: f32[3]):
        %0: f32[3] = exp(%x)
        %1: f32[3] = identity(%0)
        return %0, %1
    """,
    "identity_of_a_parameter": """
      graph g(%x: f32[3]):
        param %w: f32[3]
        %0: f32[3] = identity(%w)
        %1: f32[3] = add(%x, %0)
        return %0, %1
    """,
}


@pytest.mark.parametrize("text", UNCHANGED.values(), ids=UNCHANGED.keys())
def test_simplify_leaves_alone(text: str) -> None:
    check_unchanged(simplify, text)


@pytest.mark.parametrize(("src", "dst", "ok"), [
    ("f32", "f64", True), ("f64", "f32", False), ("f16", "bf16", False), ("bf16", "f32", True),
    ("i8", "f16", True), ("i32", "f32", False), ("i32", "f64", True), ("u8", "i8", False),
    ("u8", "i32", True), ("i64", "u8", False), ("bool", "i8", True), ("f32", "bool", False),
    ("i8", "u8", False), ("u8", "u8", True),
])
def test_lossless_cast(src: str, dst: str, ok: bool) -> None:
    assert lossless_cast(dtypes.dtype(src), dtypes.dtype(dst)) is ok
