"""Weather: snow, frost, fog and spatter (CIFAR-10-C's formulas, batched; two departures named).

- **frost** blends the image with a frost texture at the published weights. The generator
  crops one of six frost photographs that ship with it; those photographs are not part of this
  project, so the texture is procedural: ridged diamond-square noise (thin bright veins on a
  mottled ground) tinted blue-white, scaled to a mean of 0.45.
- **spatter**'s water drops are shaded by an emboss of the smoothed drop mask, where the
  generator used OpenCV's Canny edges, distance transform and histogram equalization (OpenCV is
  not a dependency). The mud variant and every parameter are the generator's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ops import (
    Rand,
    box_blur3,
    clipped_zoom,
    correlate2d,
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
EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
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


def frost(x: Tensor, params: tuple[float, float], rand: Rand) -> Tensor:
    """image_weight * x + frost_weight * frost texture."""
    image_weight, frost_weight = params
    b, c, h, w = x.shape
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


def spatter(x: Tensor, params: tuple, rand: Rand) -> Tensor:
    """Drops of water (severities with kind 0) or mud (kind 1) from a thresholded, smoothed
    Gaussian field."""
    mean, std, sigma, threshold, strength, kind = params
    b, c, h, w = x.shape
    liquid = gaussian_filter(rand.normal((b, 1, h, w), mean, std), sigma, "nearest")
    liquid = liquid.masked_fill(liquid < threshold, 0)
    if kind == 0:
        mask = gaussian_filter((liquid > 0).to(x.dtype), 1.0, "nearest")
        shade = box_blur3(correlate2d(mask, EMBOSS, "mirror").clamp_min(0))
        m = liquid * (1 + shade)
        m = m / m.amax((1, 2, 3), keepdim=True).clamp_min(1e-12) * strength
        return (x + (m * _colour(WATER, c, x.device)).clamp(0, 1)).clamp_(0, 1)
    m = gaussian_filter((liquid > threshold).to(x.dtype), strength, "nearest")
    m = m.masked_fill(m < 0.8, 0)
    return (x * (1 - m) + m * _colour(MUD, c, x.device)).clamp_(0, 1)
