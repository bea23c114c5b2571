"""Image corruptions on batches of tensors, in the spirit of MNIST-C / CIFAR-10-C.

Every corruption maps a batch ``x`` of shape [B, C, H, W] with values in [0, 1] to a batch of the
same shape in [0, 1], at severity 1 (mild) to 5 (strong). Random corruptions draw from the
``torch.Generator`` they are given, so a (seed, corruption, severity) triple always gives the
same images. The severity tables follow the spirit of Hendrycks & Dietterich (2019), scaled
down for small, smooth grayscale digits: at CIFAR-10-C's strengths a digits classifier falls to
chance at severity 1, which leaves nothing to rank.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Corruption = Callable[[Tensor, int, torch.Generator], Tensor]


def gaussian_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    std = (0.02, 0.04, 0.06, 0.09, 0.13)[severity - 1]
    return (x + std * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def shot_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    photons = (500.0, 250.0, 100.0, 50.0, 25.0)[severity - 1]
    return (torch.poisson(x * photons, generator=gen) / photons).clamp(0, 1)


def impulse_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    amount = (0.005, 0.01, 0.02, 0.035, 0.05)[severity - 1]
    u = torch.rand(x.shape, generator=gen)
    salt = torch.rand(x.shape, generator=gen) < 0.5
    hit = u < amount
    return torch.where(hit, salt.to(x.dtype), x)


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    """Depthwise 2-D convolution with reflect padding; ``kernel``: [kh, kw], sums to 1."""
    c = x.shape[1]
    kh, kw = kernel.shape
    padded = F.pad(x, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode="reflect")
    weight = kernel.to(x.dtype).expand(c, 1, kh, kw)
    return F.conv2d(padded, weight, groups=c)


def gaussian_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    sigma = (0.5, 0.75, 1.0, 1.25, 1.5)[severity - 1]
    radius = int(2 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return _blur(x, torch.outer(g, g)).clamp(0, 1)


def motion_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """A horizontal streak of odd length; its direction (left/right tilt) is random per batch."""
    length = (3, 5, 7, 9, 11)[severity - 1]
    kernel = torch.eye(length, dtype=torch.float64)
    if torch.rand((), generator=gen) < 0.5:
        kernel = kernel.flip(0)
    kernel[length // 2] += 2.0  # mostly horizontal, a little diagonal
    return _blur(x, kernel / kernel.sum()).clamp(0, 1)


def contrast(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    factor = (0.75, 0.6, 0.45, 0.3, 0.2)[severity - 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def brightness(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    shift = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    return (x + shift).clamp(0, 1)


def pixelate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # Side fractions chosen so the distortion grows with severity at 28x28: ratios that divide
    # the side evenly (such as 1/2) give clean blocks and distort less than their neighbours.
    scale = (0.86, 0.72, 0.43, 0.36, 0.29)[severity - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(int(h * scale), 1), max(int(w * scale), 1)), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
}


def corrupt(x: Tensor, corruption: str, severity: int, seed: int) -> Tensor:
    """Apply one corruption to a batch in [0, 1], deterministically for (seed, name, severity)."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1-5, got {severity}")
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{corruption}/{severity}".encode()))
    return CORRUPTIONS[corruption](x, severity, gen)


def shift_each(x: Tensor, names: tuple[str, ...], seed: int) -> Tensor:
    """Each image of ``x`` once under a corruption and severity drawn uniformly at random
    (generator seeded by ``seed``): a shifted copy, e.g. the CID half of a dev mix."""
    gen = torch.Generator().manual_seed(seed)
    kinds = torch.randint(len(names), (len(x),), generator=gen)
    levels = torch.randint(1, 6, (len(x),), generator=gen)
    out = x.clone()
    for k, name in enumerate(names):
        for severity in range(1, 6):
            chosen = (kinds == k) & (levels == severity)
            if chosen.any():
                out[chosen] = corrupt(out[chosen], name, severity, seed)
    return out
