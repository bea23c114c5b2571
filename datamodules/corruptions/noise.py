"""Noise: gaussian, shot, impulse and speckle (CIFAR-10-C's formulas, per pixel and channel)."""

from __future__ import annotations

from torch import Tensor

from .ops import Rand


def gaussian_noise(x: Tensor, std: float, rand: Rand) -> Tensor:
    """x + N(0, std^2)."""
    return (x + rand.normal(tuple(x.shape), std=std)).clamp_(0, 1)


def shot_noise(x: Tensor, photons: float, rand: Rand) -> Tensor:
    """Poisson(x * photons) / photons: fewer photons, more noise."""
    return (rand.poisson(x * photons) / photons).clamp_(0, 1)


def impulse_noise(x: Tensor, amount: float, rand: Rand) -> Tensor:
    """Salt and pepper: each value is replaced with probability ``amount``, by 1 or 0 with equal
    odds (scikit-image's ``random_noise(mode="s&p")``)."""
    hit = rand.uniform(tuple(x.shape), 0, 1) <= amount
    salt = rand.uniform(tuple(x.shape), 0, 1) <= 0.5
    return x.masked_fill(hit & salt, 1.0).masked_fill(hit & ~salt, 0.0)


def speckle_noise(x: Tensor, std: float, rand: Rand) -> Tensor:
    """x + x * N(0, std^2): noise proportional to intensity."""
    return (x + x * rand.normal(tuple(x.shape), std=std)).clamp_(0, 1)
