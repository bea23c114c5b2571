"""int8 arithmetic against its closed forms, and the host int8 reference against the
``tflite-micro`` interpreter (TFLite Micro's reference kernels) bit for bit, op by op, on models
written by the project's own ``.tflite`` writer."""

from __future__ import annotations

import numpy as np
import pytest
from uqbench.deploy.graph import Graph, Op, QTensor
from uqbench.deploy.int8 import (
    INT32_MAX,
    INT32_MIN,
    QParams,
    activation_qparams,
    dequantize,
    fake_quantize_weights,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_bias,
    quantize_multiplier,
    quantize_weights,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from uqbench.deploy.reference import run
from uqbench.deploy.tflite import run_tflite_micro, to_tflite


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def _rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder, threshold = x & mask, (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def test_srdhm_and_rounding_shift_are_the_c_definitions():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 500), [INT32_MIN, INT32_MAX, 0, -1]])
    b = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 500), [INT32_MIN, INT32_MAX, 7, 1]])
    ours = saturating_rounding_doubling_high_mul(a, b)
    assert ours.tolist() == [_srdhm(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    x = rng.integers(-(2**31), 2**31, 300)
    for e in (0, 1, 5, 17, 31):
        assert rounding_divide_by_pot(x, e).tolist() == [_rdbpot(int(v), e) for v in x]
    # Half away from zero on exact halves: 3 / 2 -> 2, -3 / 2 -> -2.
    assert rounding_divide_by_pot(np.array([3, -3, 5, -5]), 1).tolist() == [2, -2, 3, -3]


@pytest.mark.parametrize("real", [1e-9, 0.0003, 0.2, 0.5, 0.999999999, 1.0, 1.7, 123.4])
def test_quantize_multiplier_represents_the_real_value(real):
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2**-30
    x = np.array([1000, -1000, 123456, -98765])
    error = np.abs(multiply_by_quantized_multiplier(x, m, shift) - x * real)
    assert (error <= 0.5 + 1e-6 * np.abs(x * real) + 1e-9).all()  # rounded to the nearest


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(1 - 2**-40) == (2**30, 1)  # rounds up to 2^31: renormalized


def test_activation_and_weight_quantization():
    p = activation_qparams(-0.7, 2.3)
    assert dequantize(quantize(np.array([0.0]), p), p)[0] == 0.0  # zero is exact
    x = np.linspace(-0.7, 2.3, 101)
    assert np.abs(dequantize(quantize(x, p), p) - x).max() <= float(p.scale[0]) / 2 + 1e-9
    assert activation_qparams(0.5, 2.0).zero_point[0] == -128  # widened to contain 0
    w = np.random.default_rng(1).normal(size=(4, 3, 3, 2))
    q, params = quantize_weights(w, 0)
    assert q.dtype == np.int8 and (np.abs(q.reshape(4, -1)).max(1) == 127).all()
    assert (params.zero_point == 0).all() and params.scale.shape == (4,)
    bias = quantize_bias(np.array([0.1, -0.2, 0.0, 1.0]), 0.02, params.scale)
    error = np.abs(bias * 0.02 * params.scale - [0.1, -0.2, 0.0, 1.0])
    assert (error <= 0.5 * 0.02 * params.scale + 1e-9).all()
    huge = quantize_bias(np.array([1e6, -1e6]), 1e-6, np.array([1e-3, 1e-3], dtype=np.float32))
    assert huge.tolist() == [2**30, -(2**30)]  # saturated so that acc + bias fits in int32


# -- the host reference against TFLite Micro ---------------------------------------------------

RNG = np.random.default_rng(0)


def _activation(name, shape, low, high):
    return QTensor(name, shape, activation_qparams(low, high))


def _weighted(graph, kind, x, out, w, stride, activation):
    inp = graph.tensors[x]
    if kind == "depthwise_conv2d":
        q, params = quantize_weights(w, 3)
    else:
        q, params = quantize_weights(w, 0)
    graph.add(QTensor(f"{out}/w", q.shape, params, data=q))
    scale = params.scale * inp.qparams.scale[0]
    b = quantize_bias(RNG.normal(size=len(params.scale)), inp.qparams.scale[0], params.scale)
    graph.add(QTensor(f"{out}/b", b.shape, QParams(scale, np.zeros(len(b), np.int64)), "int32", b))
    options = {"stride": stride, "activation": activation}
    graph.ops.append(Op(kind, [x, f"{out}/w", f"{out}/b"], [out], options))


def _single(kind, stride=(1, 1), activation="relu"):
    g = Graph({}, [], ["x"], ["y"])
    g.add(_activation("x", (1, 9, 9, 3), -1, 2))
    if kind == "conv2d":
        size = ((9 - 3) // stride[0] + 1, (9 - 3) // stride[1] + 1)
        g.add(_activation("y", (1, *size, 4), -0.5, 3))
        _weighted(g, kind, "x", "y", RNG.normal(size=(4, 3, 3, 3)), stride, activation)
    elif kind == "depthwise_conv2d":
        size = ((9 - 3) // stride[0] + 1, (9 - 3) // stride[1] + 1)
        g.add(_activation("y", (1, *size, 3), -0.5, 3))
        _weighted(g, kind, "x", "y", RNG.normal(size=(1, 3, 3, 3)), stride, activation)
    elif kind == "fully_connected":
        g.add(QTensor("flat", (1, 243), g.tensors["x"].qparams))
        g.ops.append(Op("reshape", ["x"], ["flat"]))
        g.add(_activation("y", (1, 10), -5, 5))
        _weighted(g, kind, "flat", "y", RNG.normal(size=(10, 243)), (1, 1), activation)
    elif kind == "average_pool_2d":
        g.add(QTensor("y", (1, 1, 1, 3), g.tensors["x"].qparams))
        g.ops.append(Op(kind, ["x"], ["y"], {"filter": (9, 9), "stride": (1, 1)}))
    elif kind == "pad_conv_add":
        g.add(QTensor("p", (1, 11, 11, 3), g.tensors["x"].qparams))
        g.ops.append(Op("pad", ["x"], ["p"], {"paddings": ((1, 1), (1, 1))}))
        g.add(_activation("c", (1, 9, 9, 3), -3, 1))
        _weighted(g, "conv2d", "p", "c", RNG.normal(size=(3, 3, 3, 3)), (1, 1), "none")
        g.add(_activation("y", (1, 9, 9, 3), -2, 4))
        g.ops.append(Op("add", ["x", "c"], ["y"], {"activation": activation}))
    return g


@pytest.mark.parametrize(
    "kind,stride,activation",
    [
        ("conv2d", (1, 1), "relu"),
        ("conv2d", (2, 2), "none"),
        ("depthwise_conv2d", (1, 1), "relu6"),
        ("depthwise_conv2d", (2, 2), "relu"),
        ("fully_connected", (1, 1), "none"),
        ("average_pool_2d", (1, 1), "none"),
        ("pad_conv_add", (1, 1), "relu"),
    ],
)
def test_host_reference_is_tflite_micro_bit_for_bit(kind, stride, activation):
    graph = _single(kind, stride, activation)
    x = RNG.integers(-128, 128, (8, 9, 9, 3), dtype=np.int8)
    ours = run(graph, x)["y"]
    theirs = run_tflite_micro(to_tflite(graph), x).reshape(ours.shape)
    assert ours.dtype == theirs.dtype == np.int8
    np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(ours)) > 3  # a real range of outputs, not a saturated constant


@pytest.mark.parametrize("axis", [0, 1])
def test_qat_fake_quantization_is_the_deploy_weight_rule(axis):
    import torch

    rng = np.random.default_rng(5)
    weight = rng.normal(0, 0.3, (6, 5, 3)).astype(np.float32)
    weight[2] = 0.0  # an all-zero channel (scale 1) ...
    weight[3, 0, 0] = 0.5 * 127 * 0.3  # ... and a rounding tie at 0.5 of a level elsewhere
    tensor = torch.tensor(weight, requires_grad=True)
    faked = fake_quantize_weights(tensor, axis)
    q, params = quantize_weights(weight, axis)
    shape = [1] * 3
    shape[axis] = -1
    expected = (q.astype(np.float32) * params.scale.reshape(shape)).astype(np.float32)
    np.testing.assert_array_equal(faked.detach().numpy(), expected)
    faked.sum().backward()  # straight through: d faked / d weight = 1
    np.testing.assert_array_equal(tensor.grad.numpy(), np.ones_like(weight))
