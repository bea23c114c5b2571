"""Noise: gaussian, shot, impulse and speckle (CIFAR-10-C's formulas, per pixel and channel)."""

from __future__ import annotations

from torch import Tensor

from .ops import Rand
from .poisson import lattice_levels, lattice_table


def gaussian_noise(x: Tensor, std: float, rand: Rand) -> Tensor:
    """x + N(0, std^2)."""
    return rand.normal(tuple(x.shape), std=std).add_(x).clamp_(0, 1)


def shot_noise(x: Tensor, photons: float, rand: Rand) -> Tensor:
    """Poisson(x * photons) / photons: fewer photons, more noise.

    8-bit images (every value k / 255) draw by inversion from a table of the 256 rates
    (:mod:`.poisson`, about 3x faster than ``torch.poisson``); other images draw with
    ``torch.poisson``. The same distribution, from different streams of the same generator.
    """
    levels = lattice_levels(x)
    if levels is None:
        counts = rand.poisson(x * photons)
    else:
        table = lattice_table(float(photons))
        counts = table.sample(levels, rand.unit_doubles).to(x.device, x.dtype)
    return counts.div_(photons).clamp_(0, 1)


def impulse_noise(x: Tensor, amount: float, rand: Rand) -> Tensor:
    """Salt and pepper: each value is replaced with probability ``amount``, by 1 or 0 with equal
    odds (scikit-image's ``random_noise(mode="s&p")``)."""
    hit = rand.uniform(tuple(x.shape), 0, 1) <= amount
    salt = rand.uniform(tuple(x.shape), 0, 1) <= 0.5
    return x.masked_fill(hit & salt, 1.0).masked_fill_(hit & ~salt, 0.0)


def speckle_noise(x: Tensor, std: float, rand: Rand) -> Tensor:
    """x + x * N(0, std^2): noise proportional to intensity."""
    return rand.normal(tuple(x.shape), std=std).mul_(x).add_(x).clamp_(0, 1)
