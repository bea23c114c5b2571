"""int8 arithmetic with TFLite / TFLite Micro semantics, bit for bit.

Quantized value q, real value r: r = scale * (q - zero_point). Weights are int8 symmetric per
output channel (zero point 0, q in [-127, 127]); activations int8 asymmetric (q in [-128, 127]);
biases int32 with scale input_scale * weight_scale. A real multiplier M is carried as a Q31
integer m and a shift s with M = m * 2^(s - 31) (:func:`quantize_multiplier`), and applied to an
int32 accumulator by a saturating rounding doubling high multiply followed by a rounding right
shift (:func:`multiply_by_quantized_multiplier`), exactly as TFLite's reference kernels (and
CMSIS-NN, which is bit-exact with them) do. Every function here works on NumPy int64 arrays
holding int32 values, so a whole tensor is requantized at once.

:func:`fake_quantize_weights` is the same weight rule in torch, with a straight-through gradient:
SNAP-UQ's quantization-aware training trains its heads through it, so the int8 weights the
firmware gets from :func:`quantize_weights` are the ones training simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(Q31 multiplier, shift) with real = multiplier * 2^(shift - 31) (TFLite's
    ``QuantizeMultiplier``): the fraction of ``frexp`` rounded to 31 bits."""
    if real == 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q = round(fraction * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q), int(shift)


def _as_int64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """High 32 bits of 2 a b, rounded half away from zero (gemmlowp's SRDHM); int32 in and out."""
    a, b = _as_int64(a), _as_int64(b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    # C's integer division truncates toward zero; NumPy's // floors.
    high = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """x / 2^exponent rounded half away from zero (gemmlowp's ``RoundingDivideByPOT``)."""
    x, exponent = _as_int64(x), _as_int64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier``: left shift by a positive ``shift``, SRDHM by
    ``multiplier``, rounding right shift by a negative one. Broadcasts (per channel)."""
    x, shift = _as_int64(x), _as_int64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    high = saturating_rounding_doubling_high_mul(x << left, multiplier)
    return rounding_divide_by_pot(high, right)


@dataclass(frozen=True)
class QParams:
    """Quantization of one tensor: per-tensor (length-1 arrays) or per channel along ``axis``."""

    scale: np.ndarray  # float32 scales
    zero_point: np.ndarray  # int64 zero points
    axis: int = 0

    @classmethod
    def tensor(cls, scale: float, zero_point: int) -> QParams:
        return cls(np.array([scale], dtype=np.float32), np.array([zero_point], dtype=np.int64))


def activation_qparams(low: float, high: float) -> QParams:
    """int8 [-128, 127] asymmetric parameters for a real range, widened to contain 0 and
    with the zero point nudged to an integer (TFLite's ``ChooseQuantizationParams``)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high == low:
        return QParams.tensor(1.0, 0)
    qmin, qmax = -128, 127
    scale = (high - low) / (qmax - qmin)
    zero_from_min = qmin - low / scale
    zero_from_max = qmax - high / scale
    error_min = abs(qmin) + abs(low / scale)
    error_max = abs(qmax) + abs(high / scale)
    zero = zero_from_min if error_min < error_max else zero_from_max
    zero_point = int(min(max(round(zero), qmin), qmax))
    return QParams.tensor(np.float32(scale), zero_point)


def quantize_weights(weight: np.ndarray, axis: int = 0) -> tuple[np.ndarray, QParams]:
    """Symmetric int8 per output channel (along ``axis``): scale = max|w| / 127, q in
    [-127, 127], zero point 0. An all-zero channel gets scale 1."""
    moved = np.moveaxis(np.asarray(weight, dtype=np.float64), axis, 0)
    peak = np.abs(moved.reshape(len(moved), -1)).max(1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * moved.ndim
    shape[0] = -1
    q = np.clip(np.round(moved / scale.astype(np.float64).reshape(shape)), -127, 127)
    q = np.moveaxis(q.astype(np.int8), 0, axis)
    return q, QParams(scale, np.zeros(len(scale), dtype=np.int64), axis)


def fake_quantize_weights(weight: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """``quantize_weights(weight, axis)`` dequantized, in torch: each output channel rounded to
    127 levels of max|w| / 127 (the same float64 arithmetic, so the same integers), with the
    gradient passed straight through to ``weight``."""
    moved = weight.detach().movedim(axis, 0).double()
    peak = moved.abs().flatten(1).amax(1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak)).float().double()
    shape = (-1,) + (1,) * (moved.ndim - 1)
    q = torch.round(moved / scale.view(shape)).clamp(-127, 127)
    rounded = (q * scale.view(shape)).float().movedim(0, axis).to(weight.dtype)
    return weight + (rounded - weight).detach()


BIAS_LIMIT = 2**30


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> np.ndarray:
    """int32 bias with scale input_scale * weight_scale (per channel), rounded, and saturated at
    +-2^30: the accumulator (at most 255 * 127 * K for K inputs, under 2^30 for K < 33,000)
    plus the bias then never overflows int32, so every implementation (NumPy, C, TFLite Micro)
    adds without wrapping. Only a bias far beyond its scale's range (a tiny input range: a
    degenerate calibration) reaches the limit."""
    scale = np.float64(input_scale) * weight_scale.astype(np.float64)
    q = np.round(np.asarray(bias, dtype=np.float64) / scale)
    return np.clip(q, -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)


def quantize(x: np.ndarray, params: QParams) -> np.ndarray:
    """Real values to int8 with per-tensor ``params``, rounding half away from zero (TFLite's
    ``AffineQuantize`` uses ``std::round``)."""
    scaled = np.asarray(x, dtype=np.float64) / np.float64(params.scale[0])
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # half away from zero
    return np.clip(rounded + params.zero_point[0], -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, params: QParams) -> np.ndarray:
    return (np.asarray(q, dtype=np.float64) - params.zero_point[0]) * np.float64(params.scale[0])
