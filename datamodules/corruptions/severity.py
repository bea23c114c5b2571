"""Severity tables: the parameter of each corruption at severities 1-5, per image size.

``cifar`` and ``tinyimagenet`` are the published tables of the generators of CIFAR-10-C (32x32)
and Tiny-ImageNet-C (64x64) by Hendrycks & Dietterich (2019), value for value. Geometric
quantities that the generators write as multiples of the image side (the elastic transform's)
are stored as those multiples and scaled by the actual side, which is how 28x28 images (MNIST)
use the ``cifar`` table: MNIST-C publishes a single strength per corruption, not five, so the
nearest published five-level table is CIFAR-10-C's. ``digits`` is the embedded toy benchmark's
own table: eight corruptions, milder, because a classifier of 8x8 digits upsampled to 28x28
falls to chance at CIFAR-10-C's strengths and leaves nothing to rank.
"""

from __future__ import annotations

import numpy as np


def _arange(stop: float) -> tuple[float, ...]:
    # np.arange as the generators call it, float rounding included (arange(1, 1.06, 0.01) has
    # seven entries, 1.06 among them).
    return tuple(float(v) for v in np.arange(1, stop, 0.01))


_ZOOMS = tuple(_arange(s) for s in (1.06, 1.11, 1.16, 1.21, 1.26))

CIFAR = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # (sigma, max shift, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (disk radius, anti-alias sigma)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma)
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": _ZOOMS,
    # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (image weight, frost weight)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (fog strength, wibble decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (alpha, sigma, affine) as multiples of the image side
    "elastic_transform": (
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    # (mean, std, sigma, threshold, mask sigma or strength, 0 water / 1 mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    # (saturation scale, saturation shift)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}

TINYIMAGENET = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    "zoom_blur": _ZOOMS,
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.8),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6),
    ),
    "frost": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
    "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": (
        (0, 0, 0.08),
        (0.05, 0.3, 0.06),
        (0.1, 0.08, 0.06),
        (0.1, 0.03, 0.03),
        (0.16, 0.03, 0.02),
    ),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.6, 0),
        (0.65, 0.1, 0.8, 0.7, 0.6, 0),
        (0.65, 0.3, 1, 0.69, 0.6, 0),
        (0.65, 0.1, 0.7, 0.68, 0.6, 1),
        (0.65, 0.1, 0.5, 0.67, 0.6, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
}

DIGITS = {
    "gaussian_noise": (0.02, 0.04, 0.06, 0.09, 0.13),
    "shot_noise": (500, 250, 100, 50, 25),
    "impulse_noise": (0.005, 0.01, 0.02, 0.035, 0.05),
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),
    "motion_blur": ((1, 1), (2, 1), (3, 1.5), (4, 2), (5, 2.5)),
    "contrast": (0.75, 0.6, 0.45, 0.3, 0.2),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    # Side fractions chosen so the distortion grows with severity at 28x28: ratios that divide
    # the side evenly (such as 1/2) give clean blocks and distort less than their neighbours.
    "pixelate": (0.86, 0.72, 0.43, 0.36, 0.29),
}

TABLES: dict[str, dict[str, tuple]] = {
    "cifar": CIFAR,
    "tinyimagenet": TINYIMAGENET,
    "digits": DIGITS,
}


def table_for(side: int) -> str:
    """The published table nearest an image side: ``tinyimagenet`` from 48 pixels up, else
    ``cifar`` (32x32 and the 28x28 of MNIST)."""
    return "tinyimagenet" if side >= 48 else "cifar"
