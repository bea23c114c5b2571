"""The host int8 reference: executes a :class:`~uqbench.deploy.graph.Graph` with the integer
arithmetic of TFLite Micro's reference kernels, bit for bit (tested against the ``tflite-micro``
interpreter), on a batch at once.

Every kernel accumulates (input - input_zero_point) * weight in int64 (int32 on the device: the
ranges fit), adds the int32 bias, requantizes with :func:`~uqbench.deploy.int8.
multiply_by_quantized_multiplier`, adds the output zero point and clamps to the fused
activation's range.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from uqbench.deploy.graph import Graph, Op, QTensor
from uqbench.deploy.int8 import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

ADD_LEFT_SHIFT = 20


def activation_range(activation: str, out: QTensor) -> tuple[int, int]:
    """The int8 clamp of a fused activation (TFLite's ``CalculateActivationRangeQuantized``)."""
    scale, zero = float(out.qparams.scale[0]), int(out.qparams.zero_point[0])
    low, high = -128, 127
    if activation in ("relu", "relu6"):
        low = max(low, zero + int(round(0.0 / scale)))
    if activation == "relu6":
        high = min(high, zero + int(round(6.0 / scale)))
    return low, high


def output_multipliers(
    inp: QTensor, weight: QTensor, out: QTensor
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) of input_scale * weight_scale / output_scale, computed in
    double from the float32 scales as TFLite does."""
    s_in, s_out = np.float64(inp.qparams.scale[0]), np.float64(out.qparams.scale[0])
    pairs = [quantize_multiplier(float(s_in * np.float64(w) / s_out)) for w in weight.qparams.scale]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _requantize(acc: np.ndarray, op: Op, graph: Graph, weight: QTensor) -> np.ndarray:
    inp, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    multiplier, shift = output_multipliers(inp, weight, out)
    if len(multiplier) == 1:
        multiplier, shift = multiplier[0], shift[0]
    y = multiply_by_quantized_multiplier(acc, multiplier, shift) + int(out.qparams.zero_point[0])
    low, high = activation_range(op.options.get("activation", "none"), out)
    return np.clip(y, low, high).astype(np.int8)


def _windows(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int]) -> np.ndarray:
    """[B, H, W, C] -> [B, Ho, Wo, C, kh, kw] VALID windows at ``stride``."""
    view = sliding_window_view(x, (kh, kw), axis=(1, 2))
    return view[:, :: stride[0], :: stride[1]]


def conv2d(x: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    """Integer sums computed as float64 matrix products, in batches of examples: every partial
    sum is an integer below 2^53 (|x - zero| <= 255, |w| <= 127, far fewer than 2^37 terms), so
    the float64 result is exact, and the BLAS product is many times faster than an int64 one."""
    weight, bias = (graph.tensors[n] for n in op.inputs[1:3])
    zero = int(graph.tensors[op.inputs[0]].qparams.zero_point[0])
    w = weight.data.astype(np.float64)  # [O, kh, kw, C]
    rows = w.transpose(0, 3, 1, 2).reshape(len(w), -1)  # [O, C * kh * kw], the windows' order
    windows = _windows(x.astype(np.float64) - zero, w.shape[1], w.shape[2], op.options["stride"])
    b, ho, wo = windows.shape[:3]
    per_example = ho * wo * rows.shape[1]
    step = max(1, (1 << 22) // max(per_example, 1))  # about 32 MB of windows at a time
    acc = np.empty((b, ho, wo, len(w)), dtype=np.int64)
    for start in range(0, b, step):
        chunk = windows[start : start + step].reshape(-1, rows.shape[1])
        acc[start : start + step] = np.rint(chunk @ rows.T).reshape(-1, ho, wo, len(w))
    return _requantize(acc + bias.data.astype(np.int64), op, graph, weight)


def depthwise_conv2d(x: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    weight, bias = (graph.tensors[n] for n in op.inputs[1:3])
    zero = int(graph.tensors[op.inputs[0]].qparams.zero_point[0])
    w = weight.data.astype(np.int64)  # [1, kh, kw, C] (depth multiplier 1)
    windows = _windows(x.astype(np.int64) - zero, w.shape[1], w.shape[2], op.options["stride"])
    acc = np.einsum("bhwcij,ijc->bhwc", windows, w[0], optimize=True) + bias.data.astype(np.int64)
    return _requantize(acc, op, graph, weight)


def fully_connected(x: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    weight, bias = (graph.tensors[n] for n in op.inputs[1:3])
    zero = int(graph.tensors[op.inputs[0]].qparams.zero_point[0])
    flat = x.reshape(len(x), -1).astype(np.int64) - zero
    acc = flat @ weight.data.astype(np.int64).T + bias.data.astype(np.int64)
    return _requantize(acc, op, graph, weight)


def average_pool_2d(x: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    """Window sums divided by the window size, rounded half away from zero; input and output
    share their quantization (TFLite's int8 requirement)."""
    kh, kw = op.options["filter"]
    windows = _windows(x.astype(np.int64), kh, kw, op.options["stride"])
    total = windows.sum((-1, -2))
    count = kh * kw
    mean = np.where(total > 0, (total + count // 2) // count, -((-total + count // 2) // count))
    low, high = activation_range(op.options.get("activation", "none"), graph.tensors[op.outputs[0]])
    return np.clip(mean, low, high).astype(np.int8)


def max_pool_2d(x: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    """Window maxima; input and output share their quantization."""
    kh, kw = op.options["filter"]
    out = _windows(x, kh, kw, op.options["stride"]).max((-1, -2))
    low, high = activation_range(op.options.get("activation", "none"), graph.tensors[op.outputs[0]])
    return np.clip(out, low, high).astype(np.int8)


def add(a: np.ndarray, b: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    """TFLite's int8 ADD: both inputs rescaled to twice the larger input scale at 2^20, summed,
    rescaled to the output."""
    ta, tb, out = (graph.tensors[n] for n in (*op.inputs, op.outputs[0]))
    sa, sb, so = (float(t.qparams.scale[0]) for t in (ta, tb, out))
    twice_max = 2 * max(sa, sb)
    ma, ea = quantize_multiplier(sa / twice_max)
    mb, eb = quantize_multiplier(sb / twice_max)
    mo, eo = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * so))

    def scaled(x, t, m, e):
        shifted = (x.astype(np.int64) - int(t.qparams.zero_point[0])) << ADD_LEFT_SHIFT
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m), -e)

    total = scaled(a, ta, ma, ea) + scaled(b, tb, mb, eb)
    y = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(total, mo), -eo)
    y = y + int(out.qparams.zero_point[0])
    low, high = activation_range(op.options.get("activation", "none"), out)
    return np.clip(y, low, high).astype(np.int8)


def mul_multiplier(a: QTensor, b: QTensor, out: QTensor) -> tuple[int, int]:
    """(multiplier, shift) of sa * sb / so, in double from the float32 scales (TFLite's MUL)."""
    real = np.float64(a.qparams.scale[0]) * np.float64(b.qparams.scale[0])
    return quantize_multiplier(float(real / np.float64(out.qparams.scale[0])))


def mul(a: np.ndarray, b: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    """TFLite's int8 MUL (same shapes): (a - za) (b - zb), requantized by sa sb / so."""
    ta, tb, out = (graph.tensors[n] for n in (*op.inputs, op.outputs[0]))
    multiplier, shift = mul_multiplier(ta, tb, out)
    product = (a.astype(np.int64) - int(ta.qparams.zero_point[0])) * (
        b.astype(np.int64) - int(tb.qparams.zero_point[0])
    )
    y = multiply_by_quantized_multiplier(product, multiplier, shift)
    y = y + int(out.qparams.zero_point[0])
    low, high = activation_range(op.options.get("activation", "none"), out)
    return np.clip(y, low, high).astype(np.int8)


def pad(x: np.ndarray, op: Op, graph: Graph) -> np.ndarray:
    """Pad H and W with the input's zero point (a real 0)."""
    (top, bottom), (left, right) = op.options["paddings"]
    zero = int(graph.tensors[op.inputs[0]].qparams.zero_point[0])
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=zero)


def run(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Execute ``graph`` on int8 inputs ``x`` [B, ...] (NHWC); every tensor's value by name."""
    values = {graph.inputs[0]: np.asarray(x, dtype=np.int8)}
    for op in graph.ops:
        args = [values[name] for name in op.inputs if graph.tensors[name].data is None]
        if op.kind == "add":
            y = add(args[0], args[1], op, graph)
        elif op.kind == "mul":  # by a constant: its one batch row against every example
            y = mul(args[0], graph.tensors[op.inputs[1]].data, op, graph)
        elif op.kind == "reshape":
            y = args[0].reshape((len(args[0]), *graph.tensors[op.outputs[0]].shape[1:]))
        else:
            kernel = {
                "conv2d": conv2d,
                "depthwise_conv2d": depthwise_conv2d,
                "fully_connected": fully_connected,
                "average_pool_2d": average_pool_2d,
                "max_pool_2d": max_pool_2d,
                "pad": pad,
            }[op.kind]
            y = kernel(args[0], op, graph)
        values[op.outputs[0]] = y
    return values
