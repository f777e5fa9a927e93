"""ONNX lowerings of the neural-network ops: one ONNX node each."""

from __future__ import annotations

from lbdl_graph import ops

from .lowering import LOWERINGS, OnnxBuilder

__all__: list[str] = []


def _ints(v: tuple[int, ...] | None) -> list[int] | None:
    return list(v) if v is not None else None


@LOWERINGS.register(ops.matmul)
def _matmul_onnx(b: OnnxBuilder, a: str, c: str) -> str:
    return b.op("MatMul", a, c, dtype=b.in_type(0).dtype)


@LOWERINGS.register(ops.conv)
def _conv_onnx(b: OnnxBuilder, x: str, w: str, bias: str | None, *,
               strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
               dilations: tuple[int, ...] | None, group: int) -> str:
    return b.op("Conv", x, w, bias, dtype=b.in_type(0).dtype, strides=_ints(strides),
                pads=_ints(pads), dilations=_ints(dilations), group=group)


@LOWERINGS.register(ops.conv_transpose)
def _conv_transpose_onnx(b: OnnxBuilder, x: str, w: str, bias: str | None, *,
                         strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                         dilations: tuple[int, ...] | None, group: int,
                         output_padding: tuple[int, ...] | None) -> str:
    return b.op("ConvTranspose", x, w, bias, dtype=b.in_type(0).dtype, strides=_ints(strides),
                pads=_ints(pads), dilations=_ints(dilations), group=group,
                output_padding=_ints(output_padding))


def _ceil_extra_windows(b: OnnxBuilder, kernel_shape: tuple[int, ...],
                       strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                       dilations: tuple[int, ...] | None) -> list[int]:
    """Spatial axes where the pool ops before opset 22 produce one window more than ours.

    Up to opset 21 a ceil-mode window that starts in the end padding is kept; ours (and
    PyTorch's, and ONNX's from opset 22) drops it. Returns the axes to cut back."""
    if b.opset >= 22:
        return []
    x, out = b.in_type(0), b.out_type(0)
    k = len(kernel_shape)
    s, d = strides or (1,) * k, dilations or (1,) * k
    p = pads or (0,) * (2 * k)
    axes = []
    for i in range(k):
        dim, want = x.shape[2 + i], out.shape[2 + i]
        if isinstance(dim, int) and isinstance(want, int):
            eff = d[i] * (kernel_shape[i] - 1) + 1
            if -(-(dim + p[i] + p[i + k] - eff) // s[i]) + 1 > want:
                axes.append(2 + i)
    return axes


def _cut(b: OnnxBuilder, y: str, axes: list[int]) -> str:
    out = b.out_type(0)
    return b.op("Slice", y, b.ints([0] * len(axes), name="starts"),
                b.ints([int(out.shape[a]) for a in axes], name="ends"), b.ints(axes, name="axes"))


@LOWERINGS.register(ops.max_pool)
def _max_pool_onnx(b: OnnxBuilder, x: str, *, kernel_shape: tuple[int, ...],
                   strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                   ceil_mode: bool, dilations: tuple[int, ...] | None) -> tuple[str, ...]:
    # both outputs: the values and the flat indices the max_pool VJP scatters into
    y, idx = b.op_n("MaxPool", 2, x, dtype=b.in_type(0).dtype, back=(0,),
                    kernel_shape=list(kernel_shape), strides=_ints(strides), pads=_ints(pads),
                    ceil_mode=int(ceil_mode), dilations=_ints(dilations), storage_order=0)
    extra = _ceil_extra_windows(b, kernel_shape, strides, pads, dilations) if ceil_mode else []
    return (_cut(b, y, extra), _cut(b, idx, extra)) if extra else (y, idx)


@LOWERINGS.register(ops.avg_pool)
def _avg_pool_onnx(b: OnnxBuilder, x: str, *, kernel_shape: tuple[int, ...],
                   strides: tuple[int, ...] | None, pads: tuple[int, ...] | None,
                   ceil_mode: bool, count_include_pad: bool) -> str:
    y = b.op("AveragePool", x, dtype=b.in_type(0).dtype, kernel_shape=list(kernel_shape),
             strides=_ints(strides), pads=_ints(pads), ceil_mode=int(ceil_mode),
             count_include_pad=int(count_include_pad))
    extra = _ceil_extra_windows(b, kernel_shape, strides, pads, None) if ceil_mode else []
    return _cut(b, y, extra) if extra else y


@LOWERINGS.register(ops.batch_norm)
def _batch_norm_onnx(b: OnnxBuilder, x: str, scale: str, bias: str, mean: str, var: str, *,
                     epsilon: float) -> str:
    return b.op("BatchNormalization", x, scale, bias, mean, var, dtype=b.in_type(0).dtype,
                epsilon=epsilon)


@LOWERINGS.register(ops.layer_norm)
def _layer_norm_onnx(b: OnnxBuilder, x: str, scale: str, bias: str | None, *, axis: int,
                     epsilon: float) -> str:
    return b.op("LayerNormalization", x, scale, bias, dtype=b.in_type(0).dtype, axis=axis,
                epsilon=epsilon)
