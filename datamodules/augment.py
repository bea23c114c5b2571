"""Training augmentations on batches, on the device the batch is on.

Each function draws its random parameters per image, from ``gen`` when given (tests replay a
seeded generator) or else from torch's global generator on the batch's device, which the runner
seeds: a run is repeatable on one device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, low: float, high: float, like: Tensor, gen: torch.Generator | None) -> Tensor:
    u = torch.rand(n, generator=gen, device="cpu" if gen is not None else like.device)
    return (u * (high - low) + low).to(like.device, like.dtype)


def crop_flip(x: Tensor, pad: int, fill: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Random crop with ``pad`` pixels of padding (value ``fill`` [C]) and horizontal flip with
    probability 0.5 (torchvision's ``RandomCrop(size, padding=pad)`` then
    ``RandomHorizontalFlip()``), per image."""
    b, c, h, w = x.shape
    padded = fill.to(x.device, x.dtype)[None, :, None, None].expand(b, c, h + 2 * pad, w + 2 * pad)
    padded = padded.clone()
    padded[..., pad : pad + h, pad : pad + w] = x
    device = "cpu" if gen is not None else x.device
    top = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=device).to(x.device)
    left = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=device).to(x.device)
    flip = (torch.rand(b, generator=gen, device=device) < 0.5).to(x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = left[:, None] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    every = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[every, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def color_jitter(x: Tensor, strength: float, gen: torch.Generator | None = None) -> Tensor:
    """Brightness, contrast and saturation factors drawn from [1 - s, 1 + s] per image, applied
    in that order to images in [0, 1] (torchvision's ``ColorJitter`` formulas, fixed order):
    brightness x * b; contrast (x - m) * c + m with m the image's mean gray; saturation
    g + (x - g) * s with g the pixel's gray."""
    b = len(x)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)[:, None, None]
    factors = [
        _uniform(b, 1 - strength, 1 + strength, x, gen)[:, None, None, None] for _ in range(3)
    ]
    x = (x * factors[0]).clamp(0, 1)
    mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * factors[1] + mean).clamp(0, 1)
    gray = (x * weights).sum(1, keepdim=True)
    return ((x - gray) * factors[2] + gray).clamp(0, 1)


def rotate_translate(
    x: Tensor, degrees: float, shift: int, fill: float, gen: torch.Generator | None = None
) -> Tensor:
    """Rotation by an angle in [-degrees, degrees] and an integer translation of up to ``shift``
    pixels on each axis, per image, nearest-neighbour, ``fill`` outside (torchvision's
    ``RandomAffine(degrees, translate)`` with its default interpolation)."""
    b, _, h, w = x.shape
    angle = _uniform(b, -degrees, degrees, x, gen) * (math.pi / 180)
    dx = torch.round(_uniform(b, -shift, shift, x, gen))
    dy = torch.round(_uniform(b, -shift, shift, x, gen))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid maps output to input in [-1, 1] units: rotate back, then shift back.
    theta = torch.stack(
        [
            torch.stack([cos, sin, -2 * dx / w], 1),
            torch.stack([-sin, cos, -2 * dy / h], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out + fill


def crop_flip_jitter(
    x: Tensor, mean: Tensor, std: Tensor, pad: int = 4, jitter: float = 0.2
) -> Tensor:
    """The colour-image recipe on normalized batches: random crop (black padding), horizontal
    flip, colour jitter in [0, 1] space; ``mean`` / ``std``: the normalization, [C, 1, 1]."""
    mean, std = mean.to(x.device, x.dtype), std.to(x.device, x.dtype)
    x = crop_flip(x, pad, fill=(-mean / std).flatten())  # black, as padding an image is
    return (color_jitter(x * std + mean, jitter) - mean) / std
