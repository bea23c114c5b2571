"""Weather: snow, frost, fog and spatter (CIFAR-10-C's formulas, batched; two departures named).

- **frost** blends the image with a frost layer at the published weights: crops of the
  generator's own frost photographs where a data set has them (:mod:`.frost_photos`), else a
  procedural texture, a labelled fallback that the run record names: ridged diamond-square
  noise (thin bright veins on a mottled ground) tinted blue-white, scaled to a mean of 0.45.
- **spatter** follows the generator step by step: its water drops are shaded by OpenCV's Canny
  edges, distance transform, truncation, box blurs, histogram equalization and emboss filter
  (OpenCV's own functions, image by image), its mud by the smoothed drop mask.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from .ops import (
    Rand,
    clipped_zoom,
    gaussian_filter,
    gray,
    motion_shifts,
    next_power_of_two,
    plasma_fractal,
    shift_sum,
)

WATER = torch.tensor([175, 238, 238]) / 255  # pale turquoise, RGB
MUD = torch.tensor([63, 42, 20]) / 255
ICE = torch.tensor([0.82, 0.91, 1.0])
EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])  # the generator's shading kernel
GRAY_WEIGHTS = torch.tensor([0.2989, 0.5870, 0.1140])  # the generator's rgb2gray for colour layers


def _colour(rgb: Tensor, channels: int, device: torch.device) -> Tensor:
    """[1, C, 1, 1]: the colour itself for RGB, its gray value for 1-channel images."""
    value = rgb if channels == 3 else (rgb * GRAY_WEIGHTS).sum(0, keepdim=True)
    return value.to(device)[None, :, None, None]


def fog(x: Tensor, params: tuple[float, float], rand: Rand) -> Tensor:
    """x + strength * plasma map, rescaled by max(x) / (max(x) + strength)."""
    strength, decay = params
    b, _, h, w = x.shape
    maps = plasma_fractal(b, next_power_of_two(max(h, w)), decay, rand)[:, None, :h, :w]
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * maps).mul_(peak).div_(peak + strength).clamp_(0, 1)


def frost_texture(b: int, h: int, w: int, rand: Rand) -> Tensor:
    """[B, 3, H, W] procedural frost in [0, 1] (see the module docstring)."""
    base = plasma_fractal(b, next_power_of_two(max(h, w)), 1.6, rand)[:, None, :h, :w]
    veins = (1 - (2 * base - 1).abs()) ** 4
    layer = 0.35 * base + 0.65 * veins
    layer = (layer * 0.45 / layer.mean((1, 2, 3), keepdim=True)).clamp(0, 1)
    return layer * ICE.to(layer.device)[None, :, None, None]


def frost(x: Tensor, params: tuple[float, float], rand: Rand, photos: Any = None) -> Tensor:
    """image_weight * x + frost_weight * frost layer: crops of the generator's photographs
    (``photos``, a :class:`.frost_photos.FrostPhotos`), else the procedural texture."""
    image_weight, frost_weight = params
    b, c, h, w = x.shape
    if photos is not None:
        layer = photos.layer(b, h, w, rand).to(x.device, x.dtype)
    else:
        layer = frost_texture(b, h, w, rand)
    if c == 1:
        layer = (layer * GRAY_WEIGHTS.to(x.device)[None, :, None, None]).sum(1, keepdim=True)
    return (image_weight * x).add_(frost_weight * layer).clamp_(0, 1)


def snow(x: Tensor, params: tuple, rand: Rand) -> Tensor:
    """Gaussian flakes, zoomed, thresholded, streaked by a motion blur at an angle in
    [-135, -45) degrees, added twice (once rotated 180 degrees) over a whitened image."""
    mean, std, zoom, threshold, radius, sigma, image_weight = params
    b, _, h, w = x.shape
    flakes = clipped_zoom(rand.normal((b, 1, h, w), mean, std), zoom)
    flakes = flakes.masked_fill(flakes < threshold, 0).clamp(0, 1)
    weights, dy, dx = motion_shifts(radius, sigma, rand.uniform((b,), -135, -45))
    flakes = shift_sum(flakes, weights, dy, dx).mul_(255).round_().div_(255)
    # In place where a fresh batch-sized tensor would only be read once (page faults cost more
    # than the arithmetic); the same operations in the same order as the formula.
    brightened = torch.maximum(x, (gray(x) * 1.5).add_(0.5)).mul_(1 - image_weight)
    whitened = (image_weight * x).add_(brightened)
    return whitened.add_(flakes).add_(flakes.flip(-1, -2)).clamp_(0, 1)


def water_shading(layer: np.ndarray) -> np.ndarray:
    """The generator's shading of one 8-bit drop layer [H, W] (uint8): float32 [H, W], the
    layer times its shading (Canny edges at 50/150, L2 distance to them with a 5x5 mask,
    truncated at 20, 3x3 box blur to 8 bits, histogram equalized, embossed to 8 bits with
    saturation, 3x3 box blur)."""
    dist = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, EMBOSS), (3, 3)).astype(np.float32)
    return layer * dist


def spatter(x: Tensor, params: tuple, rand: Rand) -> Tensor:
    """Drops of water (severities with kind 0) or mud (kind 1) from a thresholded, smoothed
    Gaussian field."""
    mean, std, sigma, threshold, strength, kind = params
    b, c, h, w = x.shape
    liquid = gaussian_filter(rand.normal((b, 1, h, w), mean, std), sigma, "nearest")
    liquid = liquid.masked_fill(liquid < threshold, 0)
    if kind == 0:
        layers = (liquid[:, 0] * 255).cpu().numpy().astype(np.uint8)  # [B, H, W], as there
        m = torch.from_numpy(np.stack([water_shading(layer) for layer in layers]))[:, None]
        peak = m.amax((1, 2, 3), keepdim=True)
        # The generator divides by the peak; with no drop at all (peak 0) it made NaN: no water.
        m = torch.where(peak > 0, m / peak.clamp_min(1e-12), 0).mul_(strength).to(x.device)
        return (x + m * _colour(WATER, c, x.device)).clamp_(0, 1)
    m = gaussian_filter((liquid > threshold).to(x.dtype), strength, "nearest")
    m = m.masked_fill(m < 0.8, 0)
    return (x * (1 - m) + m * _colour(MUD, c, x.device)).clamp_(0, 1)
