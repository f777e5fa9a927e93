"""Samples of the shape, layout and indexing ops.

The oracle is ONNX's reference evaluator, with our attributes turned into ONNX's input tensors
(reshape's shape, slice's starts/ends, pad's pads, ...). Where the reference evaluator departs
from the ONNX spec (Slice follows Python slicing; GatherElements rejects smaller indices; Pad
rejects negative pads) the sample uses a loop-based NumPy formula of the spec instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from onnx import numpy_helper

from lbdl_graph import ops
from lbdl_graph.dtypes import dtype
from tests.op_db import Arrays, OpSample
from tests.samples.elementwise import Gen, bools, floats, inputs, ints

__all__ = ["SAMPLES"]

I64_MAX = 2**63 - 1


def _i64(*values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _plus(*extra: np.ndarray | None) -> Callable[[Arrays], Arrays]:
    """ONNX inputs = our inputs followed by constant tensors (None: an absent input)."""
    return lambda a: [*a, *extra]


SAMPLES: list[OpSample] = []

# ---- reshape ----
SAMPLES += [
    OpSample(ops.reshape, inputs(g), attrs={"shape": shape}, label=label, onnx_op="Reshape",
             onnx_inputs=_plus(_i64(*shape)))
    for label, g, shape in (
        ("flatten", floats(2, 3, 4), (6, 4)),
        ("infer", floats(2, 3, 4, dt="float64"), (4, -1)),
        ("copy_dim", floats(2, 3, 4), (0, -1)),
        ("copy_two", ints(2, 3, 4), (0, 0, 2, 2)),
        ("to_scalar", floats(1, 1), ()),
        ("from_scalar", floats(), (1, 1, 1)),
        ("empty", floats(0, 3), (-1,)),
        ("empty_copy", floats(0, 3), (0, 3, 1)),
        ("bool", bools(6), (2, 3)),
    )
]

# ---- transpose ----
SAMPLES += [
    OpSample(ops.transpose, inputs(g), attrs={"perm": perm}, label=label, onnx_op="Transpose",
             onnx_attrs={} if perm is None else {"perm": [p % len(perm) for p in perm]})
    for label, g, perm in (
        ("reverse", floats(2, 3, 4), None),
        ("matrix", floats(3, 5, dt="float64"), (1, 0)),
        ("perm3", ints(2, 3, 4), (1, 0, 2)),
        ("neg_perm", floats(2, 3, 4), (-1, 0, -2)),
        ("empty", floats(0, 3, 1), (2, 0, 1)),
        ("scalar", floats(), None),
    )
]

# ---- squeeze / unsqueeze ----
SAMPLES += [
    OpSample(ops.squeeze, inputs(g), attrs={"axes": axes}, label=label, onnx_op="Squeeze",
             onnx_inputs=_plus() if axes is None else _plus(_i64(*axes)))
    for label, g, axes in (
        ("all", floats(1, 3, 1, 2), None),
        ("one", floats(1, 3, 1, dt="float64"), (0,)),
        ("neg", ints(2, 1), (-1,)),
        ("two", floats(1, 2, 1), (0, 2)),
        ("to_scalar", floats(1, 1), None),
        ("empty", floats(0, 1, 3), (1,)),
    )
]
SAMPLES += [
    OpSample(ops.unsqueeze, inputs(g), attrs={"axes": axes}, label=label, onnx_op="Unsqueeze",
             onnx_inputs=_plus(_i64(*axes)))
    for label, g, axes in (
        ("front", floats(3, 4), (0,)),
        ("back", floats(3, 4, dt="float64"), (-1,)),
        ("two", ints(3, 4), (0, 3)),
        ("neg_two", floats(3), (-1, -3)),
        ("scalar", floats(), (0,)),
        ("empty", floats(0, 2), (1,)),
    )
]


# ---- concat / split ----
def _concat(label: str, axis: int, *gens: Gen) -> OpSample:
    return OpSample(ops.concat, inputs(*gens), attrs={"axis": axis}, label=label,
                    onnx_op="Concat", onnx_attrs={"axis": axis})


SAMPLES += [
    _concat("axis0", 0, floats(2, 3), floats(4, 3)),
    _concat("last", -1, floats(2, 3, dt="float64"), floats(2, 1, dt="float64"),
            floats(2, 2, dt="float64")),
    _concat("middle", 1, ints(2, 1, 3), ints(2, 2, 3)),
    _concat("with_empty", 0, floats(0, 3), floats(2, 3)),
    _concat("single", 0, floats(3)),
    _concat("bool", 0, bools(2), bools(3)),
]
SAMPLES += [
    OpSample(ops.split, inputs(g), attrs={"axis": axis, "split": split}, label=label,
             onnx_op="Split", onnx_inputs=_plus(_i64(*split)), onnx_attrs={"axis": axis})
    for label, g, axis, split in (
        ("axis0", floats(5, 2), 0, (2, 3)),
        ("last", floats(2, 6, dt="float64"), -1, (1, 2, 3)),
        ("zero_piece", ints(3, 4), 1, (2, 0, 2)),
        ("one_piece", floats(4), 0, (4,)),
        ("empty", floats(0, 4), 1, (1, 3)),
    )
]


# ---- slice ----
def _onnx_slice_reference(x: np.ndarray, *, starts: tuple[int, ...], ends: tuple[int, ...],
                          axes: tuple[int, ...] | None,
                          steps: tuple[int, ...] | None) -> np.ndarray:
    """ONNX Slice by its spec: clamp start/end per axis, then walk the indices one by one."""
    ax = range(len(starts)) if axes is None else axes
    st = [1] * len(starts) if steps is None else steps
    picks = [list(range(d)) for d in x.shape]
    for s, e, a, k in zip(starts, ends, ax, st, strict=True):
        d = x.shape[a]
        s, e = (s + d if s < 0 else s), (e + d if e < 0 else e)
        lo, hi = (0, d) if k > 0 else (-1, d - 1)
        s, e = max(max(lo, 0), min(s, hi)), max(lo, min(e, hi))
        picks[a] = []
        while (k > 0 and s < e) or (k < 0 and s > e):
            picks[a].append(s)
            s += k
    return x[np.ix_(*picks)] if x.ndim else x


def _slice(label: str, g: Gen, starts: tuple[int, ...], ends: tuple[int, ...],
           axes: tuple[int, ...] | None = None, steps: tuple[int, ...] | None = None,
           spec: bool = False) -> OpSample:
    attrs = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
    if spec:
        return OpSample(ops.slice_, inputs(g), attrs=attrs, label=label,
                        reference=_onnx_slice_reference)
    extra = [_i64(*starts), _i64(*ends), None if axes is None else _i64(*axes),
             None if steps is None else _i64(*steps)]
    return OpSample(ops.slice_, inputs(g), attrs=attrs, label=label, onnx_op="Slice",
                    onnx_inputs=_plus(*extra))


SAMPLES += [
    _slice("basic", floats(5, 4), (1,), (4,)),
    _slice("two_axes", floats(5, 6, dt="float64"), (1, 2), (-1, 5), (0, 1)),
    _slice("neg_axis_step", ints(3, 8), (1,), (7,), (-1,), (2,)),
    _slice("to_end", floats(4, 5), (2,), (I64_MAX,), (1,)),
    _slice("reverse", floats(6), (-1,), (-I64_MAX - 1,), (0,), (-1,)),
    _slice("reverse_step2", floats(3, 7), (5,), (0,), (1,), (-2,)),
    _slice("clamp_high", floats(4), (1,), (100,)),
    _slice("clamp_low", floats(4), (-100,), (2,)),
    _slice("empty_result", floats(4, 3), (3,), (1,), (0,)),
    _slice("empty_input", floats(0, 3), (0,), (2,), (1,)),
    # ONNX clamps a backward start below -dim to 0 (one element), where Python gives nothing
    _slice("start_below_dim_backward", floats(5), (-10,), (-20,), (0,), (-1,), spec=True),
    _slice("start_above_dim_backward", floats(5, 2), (10,), (-20,), (0,), (-1,), spec=True),
    _slice("spec_mixed", floats(6, 5), (-8, 1), (2, 100), (0, -1), (1, 2), spec=True),
]


# ---- gather / gather_elements ----
def _gather(label: str, data: Gen, idx: Gen, axis: int) -> OpSample:
    return OpSample(ops.gather, inputs(data, idx), attrs={"axis": axis}, label=label,
                    onnx_op="Gather", onnx_attrs={"axis": axis})


SAMPLES += [
    _gather("rows", floats(5, 3), ints(2, 4, lo=0, hi=5), 0),
    _gather("negative", floats(4, 6, dt="float64"), ints(3, lo=-6, hi=6), -1),
    _gather("scalar_index", floats(4, 3), ints(lo=-4, hi=4), 0),
    _gather("i32_index", ints(3, 4, 2), ints(2, dt="int32", lo=0, hi=4), 1),
    _gather("empty_index", floats(4, 3), ints(0, lo=0, hi=4), 0),
    _gather("vector_to_scalar", floats(5), ints(lo=0, hi=5), 0),
]


def _gather_elements_reference(data: np.ndarray, indices: np.ndarray, *,
                               axis: int) -> np.ndarray:
    """out[i...] = data[i... with indices[i...] on axis], one element at a time."""
    out = np.empty(indices.shape, dtype=data.dtype)
    a = axis % data.ndim
    for pos in np.ndindex(indices.shape):
        src = list(pos)
        src[a] = int(indices[pos]) % data.shape[a]
        out[pos] = data[tuple(src)]
    return out


SAMPLES += [
    # the reference evaluator mishandles a negative axis, so it is given the positive one
    OpSample(ops.gather_elements, inputs(d, i), attrs={"axis": axis}, label=label,
             onnx_op="GatherElements", onnx_attrs={"axis": axis % rank})
    for label, d, i, axis, rank in (
        ("axis0", floats(3, 4), ints(5, 4, lo=0, hi=3), 0, 2),
        ("axis1", floats(3, 4, dt="float64"), ints(3, 2, lo=0, hi=4), 1, 2),
        ("neg_axis", ints(2, 3, 4), ints(2, 3, 6, lo=0, hi=4), -1, 3),
        ("empty", floats(3, 4), ints(0, 4, lo=0, hi=3), 0, 2),
    )
]
SAMPLES += [
    OpSample(ops.gather_elements, inputs(d, i), attrs={"axis": axis}, label=label,
             reference=_gather_elements_reference)
    for label, d, i, axis in (
        ("negative_index", floats(3, 4), ints(3, 4, lo=-3, hi=3), 0),
        ("smaller_indices", floats(4, 5), ints(2, 3, lo=-5, hi=5), 1),
    )
]


# ---- scatter_elements / scatter_nd ----
_SMOOTH_SCATTER = ("none", "add")  # the reductions gradient rules are expected to cover


def _unique_rows(n: int, cols: int, dim: int) -> Gen:
    """indices[:, j] is a permutation prefix: no duplicates along axis 0."""
    return lambda rng: np.stack([rng.permutation(dim)[:n] for _ in range(cols)], axis=1)


def _scatter_elements(label: str, data: Gen, idx: Gen, upd: Gen, axis: int,
                      reduction: str) -> OpSample:
    return OpSample(ops.scatter_elements, inputs(data, idx, upd),
                    attrs={"axis": axis, "reduction": reduction}, label=label,
                    onnx_op="ScatterElements", onnx_attrs={"axis": axis, "reduction": reduction},
                    grad=reduction in _SMOOTH_SCATTER)


SAMPLES += [
    _scatter_elements("none", floats(4, 3), _unique_rows(2, 3, 4), floats(2, 3), 0, "none"),
    _scatter_elements("add_dups", floats(4, 3), ints(5, 3, lo=0, hi=4), floats(5, 3), 0, "add"),
    _scatter_elements("mul_dups", floats(3, 4, dt="float64"), ints(3, 6, lo=-4, hi=4),
                      floats(3, 6, dt="float64"), 1, "mul"),
    _scatter_elements("max_dups", ints(3, 4), ints(3, 5, lo=0, hi=4), ints(3, 5), -1, "max"),
    _scatter_elements("min_dups", floats(2, 3, 4), ints(2, 3, 3, lo=0, hi=4),
                      floats(2, 3, 3), 2, "min"),
    _scatter_elements("smaller", floats(5, 4), _unique_rows(2, 2, 5), floats(2, 2), 0, "none"),
    _scatter_elements("empty_updates", floats(3, 2), ints(0, 2, lo=0, hi=3), floats(0, 2), 0,
                      "add"),
]


def _unique_nd(n: int, dims: tuple[int, ...]) -> Gen:
    """n distinct index tuples into a tensor whose leading dims are ``dims``."""
    def gen(rng: np.random.Generator) -> np.ndarray:
        flat = rng.permutation(int(np.prod(dims)))[:n]
        return np.stack(np.unravel_index(flat, dims), axis=-1).astype(np.int64)
    return gen


def _scatter_nd(label: str, data: Gen, idx: Gen, upd: Gen, reduction: str,
                grad: bool = True) -> OpSample:
    return OpSample(ops.scatter_nd, inputs(data, idx, upd), attrs={"reduction": reduction},
                    label=label, onnx_op="ScatterND", onnx_attrs={"reduction": reduction},
                    grad=grad and reduction in _SMOOTH_SCATTER)


SAMPLES += [
    _scatter_nd("rows", floats(5, 3), _unique_nd(2, (5,)), floats(2, 3), "none"),
    _scatter_nd("elements", floats(3, 4, dt="float64"), _unique_nd(4, (3, 4)),
                floats(4, dt="float64"), "none"),
    _scatter_nd("add_dups", floats(4, 2), ints(6, 1, lo=0, hi=4), floats(6, 2), "add"),
    _scatter_nd("mul_batch", floats(3, 3), ints(2, 2, 2, lo=0, hi=3), floats(2, 2), "mul"),
    _scatter_nd("max_i64", ints(4, 3), ints(5, 1, lo=0, hi=4), ints(5, 3), "max"),
    _scatter_nd("min", floats(2, 3, 4), ints(3, 2, lo=0, hi=2), floats(3, 4), "min"),
    _scatter_nd("whole_tensor", floats(2, 3), ints(1, 0), floats(1, 2, 3), "none", grad=False),
    _scatter_nd("empty_updates", floats(3, 2), ints(0, 1, lo=0, hi=3), floats(0, 2), "add"),
]

# ---- expand / broadcast_like ----
SAMPLES += [
    OpSample(ops.expand, inputs(g), attrs={"shape": shape}, label=label, onnx_op="Expand",
             onnx_inputs=_plus(_i64(*shape)))
    for label, g, shape in (
        ("grow", floats(3, 1), (2, 3, 4)),
        ("keep_ones", floats(2, 3, dt="float64"), (1, 1)),
        ("shorter_shape", ints(2, 3), (3,)),
        ("scalar", floats(), (2, 2)),
        ("to_empty", floats(1, 3), (0, 3)),
    )
]
SAMPLES += [
    OpSample(ops.broadcast_like, inputs(g, like), label=label, onnx_op="Expand",
             onnx_inputs=lambda a: [a[0], _i64(*a[1].shape)])
    for label, g, like in (
        ("grow", floats(3, 1), floats(2, 3, 4)),
        ("same", floats(2, 3, dt="float64"), floats(2, 3, dt="float64")),
        ("like_int", ints(1), ints(5)),
        ("like_smaller", floats(2, 3), floats(3)),
        ("empty", floats(1, 2), floats(0, 2)),
    )
]


# ---- pad ----
def _pad_onnx(pads: tuple[int, ...], value: float) -> Callable[[Arrays], Arrays]:
    def conv(a: Arrays) -> Arrays:
        x = a[0]
        assert x is not None
        return [x, _i64(*pads), np.asarray(value).astype(x.dtype)]
    return conv


def _pad_constant_reference(x: np.ndarray, *, pads: tuple[int, ...], mode: str,
                            value: float) -> np.ndarray:
    """Constant padding by the spec's index map: out[i] = x[i - begin] where that exists."""
    n = x.ndim
    shape = [d + b + e for d, b, e in zip(x.shape, pads[:n], pads[n:], strict=True)]
    out = np.full(shape, np.asarray(value).astype(x.dtype), dtype=x.dtype)
    for pos in np.ndindex(*shape):
        src = tuple(p - b for p, b in zip(pos, pads[:n], strict=True))
        if all(0 <= s < d for s, d in zip(src, x.shape, strict=True)):
            out[pos] = x[src]
    return out


_PADS: Sequence[tuple[str, Gen, tuple[int, ...], str, float]] = (
    ("zeros", floats(2, 3), (1, 0, 2, 1), "constant", 0.0),
    ("value", floats(2, 3, dt="float64"), (0, 2, 1, 0), "constant", 1.5),
    ("int_value", ints(3, 2), (1, 1, 1, 1), "constant", -7.0),
    ("reflect", floats(4, 5), (2, 1, 3, 2), "reflect", 0.0),
    ("edge", floats(3, 4), (2, 0, 1, 3), "edge", 0.0),
    ("edge_1d", ints(3), (4, 2), "edge", 0.0),
    ("none", floats(2, 2), (0, 0, 0, 0), "reflect", 0.0),
    ("empty_axis", floats(0, 3), (1, 0, 2, 0), "constant", 2.0),
)
SAMPLES += [
    OpSample(ops.pad, inputs(g), attrs={"pads": pads, "mode": mode, "value": value},
             label=label, onnx_op="Pad", onnx_inputs=_pad_onnx(pads, value),
             onnx_attrs={"mode": mode})
    for label, g, pads, mode, value in _PADS
]
SAMPLES += [
    OpSample(ops.pad, inputs(g), attrs={"pads": pads, "value": 3.0}, label=label,
             reference=_pad_constant_reference)
    for label, g, pads in (
        ("negative_crop", floats(4, 5), (-1, 2, 0, -2)),
        ("negative_all", floats(3, 3, dt="float64"), (-1, -1, -1, -1)),
        ("scalar", floats(), ()),  # the reference evaluator cannot pad a scalar
    )
]

# ---- tile ----
SAMPLES += [
    OpSample(ops.tile, inputs(g), attrs={"repeats": reps}, label=label, onnx_op="Tile",
             onnx_inputs=_plus(_i64(*reps)))
    for label, g, reps in (
        ("rows", floats(2, 3), (2, 1)),
        ("both", floats(2, 3, dt="float64"), (2, 3)),
        ("three_d", ints(1, 2, 3), (3, 1, 2)),
        ("zero", floats(2, 2), (0, 2)),
        ("ones", bools(3), (1,)),
        ("scalar", floats(), ()),
    )
]


# ---- constant / full_like / iota_like ----
def _constant(label: str, value: np.ndarray) -> OpSample:
    return OpSample(ops.constant, lambda rng: [], attrs={"value": value}, label=label,
                    onnx_op="Constant", onnx_attrs={"value": numpy_helper.from_array(value)})


SAMPLES += [
    _constant("f32", np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5),
    _constant("i64_scalar", np.asarray(-7, dtype=np.int64)),
    _constant("f64", np.linspace(-1, 1, 4)),
    _constant("bool", np.array([True, False, True])),
    _constant("empty", np.zeros((0, 2), dtype=np.float32)),
]


def _full_like(label: str, shape: tuple[int, ...], like_dt: str, value: float,
               dt: str | None) -> OpSample:
    out_dt = dtype(like_dt if dt is None else dt).numpy
    attrs: dict[str, Any] = {"value": value} if dt is None else {"value": value, "dtype": dt}
    return OpSample(ops.full_like, inputs(floats(*shape, dt=like_dt)), attrs=attrs, label=label,
                    onnx_op="ConstantOfShape", onnx_inputs=lambda a: [_i64(*shape)],
                    onnx_attrs={"value": numpy_helper.from_array(
                        np.asarray([value]).astype(out_dt))}, grad=False)


SAMPLES += [
    _full_like("zeros", (2, 3), "float32", 0.0, None),
    _full_like("value", (3,), "float64", -2.5, None),
    _full_like("int_like", (2, 2), "int64", 4.0, None),
    _full_like("to_i64", (2, 3), "float32", 3.0, "int64"),
    _full_like("to_f32", (4,), "int32", 0.25, "float32"),
    _full_like("to_bool", (2,), "float32", 1.0, "bool"),
    _full_like("scalar", (), "float32", 7.0, None),
    _full_like("empty", (0, 3), "float32", 1.0, "float64"),
]


def _iota_reference(like: np.ndarray, *, axis: int | None) -> np.ndarray:
    """Flat index via np.indices and strides; index along axis via np.indices."""
    if like.ndim == 0:
        return np.zeros((), dtype=np.int64)
    grid = np.indices(like.shape, dtype=np.int64)
    if axis is not None:
        return grid[axis]
    strides = np.cumprod((*like.shape[1:], 1)[::-1])[::-1]
    return np.tensordot(strides.astype(np.int64), grid, axes=1)


SAMPLES += [
    OpSample(ops.iota_like, inputs(g), attrs={"axis": axis}, label=label,
             reference=_iota_reference)
    for label, g, axis in (
        ("flat", floats(2, 3, 4), None),
        ("axis0", floats(3, 2), 0),
        ("neg_axis", ints(2, 3, 4), -1),
        ("middle", floats(2, 3, 4, dt="float64"), 1),
        ("vector", bools(5), None),
        ("scalar", floats(), None),
        ("empty", floats(0, 3), None),
        ("empty_axis", floats(0, 3), 1),
    )
]

# ---- space_to_depth / depth_to_space (DCR) ----
SAMPLES += [
    OpSample(op, inputs(g), attrs={"blocksize": b}, label=label, onnx_op=onnx_op,
             onnx_attrs={"blocksize": b, **({"mode": "DCR"} if onnx_op == "DepthToSpace" else {})})
    for op, onnx_op, label, g, b in (
        (ops.space_to_depth, "SpaceToDepth", "2x2", floats(2, 3, 4, 6), 2),
        (ops.space_to_depth, "SpaceToDepth", "3x3_f64", floats(1, 2, 6, 3, dt="float64"), 3),
        (ops.space_to_depth, "SpaceToDepth", "1x1", floats(1, 2, 3, 3), 1),
        (ops.depth_to_space, "DepthToSpace", "2x2", floats(2, 12, 2, 3), 2),
        (ops.depth_to_space, "DepthToSpace", "3x3_f64", floats(1, 18, 2, 1, dt="float64"), 3),
    )
]
