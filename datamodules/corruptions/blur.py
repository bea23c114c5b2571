"""Blur: gaussian, glass, defocus, motion and zoom (CIFAR-10-C's formulas, batched)."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from .ops import (
    Rand,
    apply_pixel_map,
    correlate2d,
    gaussian_filter,
    motion_shifts,
    shift_sum,
    zoom_matrix,
)


def gaussian_blur(x: Tensor, sigma: float, rand: Rand) -> Tensor:
    """Gaussian of ``sigma`` pixels, edges repeated (scikit-image's ``gaussian``)."""
    return gaussian_filter(x, sigma, "nearest").clamp(0, 1)


def glass_blur(x: Tensor, params: tuple[float, int, int], rand: Rand) -> Tensor:
    """Blur, quantize to 8 bits, swap each pixel with a random neighbour, blur again.

    ``params`` = (sigma, max shift d, iterations). Pixels are visited from the bottom-right
    corner to (d + 1, d + 1), each swapped with the pixel (dy, dx) away, dy and dx drawn from
    [-d, d): the generator's order and range, so swaps build on earlier swaps as there.
    """
    sigma, d, iterations = params
    b, c, h, w = x.shape
    y = torch.floor(gaussian_filter(x, sigma, "nearest") * 255) / 255
    positions = [(r, col) for r in range(h - d, d, -1) for col in range(w - d, d, -1)]
    shifts = rand.integers(-d, d, (iterations, len(positions), 2, b))
    # Pixels first, images second: row p * b + i is pixel p of image i, so one pixel of every
    # image is a contiguous block and its random partners are one index_select away.
    z = y.permute(2, 3, 0, 1).reshape(h * w * b, c).contiguous()
    every = torch.arange(b, device=x.device)
    for it in range(iterations):
        # shifts[it]: [positions, (dx, dy), b]; partner (r + dy, col + dx) as a row of z
        partner = torch.tensor(positions, device=x.device)[:, :, None] + shifts[it].flip(1)
        partner = (partner[:, 0] * w + partner[:, 1]) * b + every  # [positions, b]
        for k, (r, col) in enumerate(positions):
            here = slice((r * w + col) * b, (r * w + col + 1) * b)
            mine = z[here].clone()
            z[here] = z.index_select(0, partner[k])
            z.index_copy_(0, partner[k], mine)
    y = z.reshape(h, w, b, c).permute(2, 3, 0, 1)
    return gaussian_filter(y, sigma, "nearest").clamp(0, 1)


def disk_kernel(radius: float, alias_sigma: float) -> Tensor:
    """The defocus kernel: a disk of ``radius`` on a grid of at least 17x17, normalized, then
    smoothed by a 3x3 (5x5 beyond radius 8) Gaussian of ``alias_sigma`` with mirrored borders
    (``cv2.GaussianBlur``)."""
    reach, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    t = torch.arange(-reach, reach + 1, dtype=torch.float64)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    g = torch.exp(-((torch.arange(ksize) - (ksize - 1) / 2) ** 2) / (2 * alias_sigma**2)).double()
    g = g / g.sum()
    smooth = correlate2d(disk[None, None], g[None, :], "mirror")
    return correlate2d(smooth, g[:, None], "mirror")[0, 0]


def defocus_blur(x: Tensor, params: tuple[float, float], rand: Rand) -> Tensor:
    """Correlation with :func:`disk_kernel`, mirrored borders (``cv2.filter2D``)."""
    return correlate2d(x, disk_kernel(*params), "mirror").clamp(0, 1)


def motion_blur(x: Tensor, params: tuple[int, float], rand: Rand) -> Tensor:
    """A one-sided Gaussian streak of ``params`` = (radius, sigma) at an angle drawn per image
    from [-45, 45) degrees."""
    radius, sigma = params
    angle = rand.uniform((len(x),), -45, 45)
    weights, dy, dx = motion_shifts(radius, sigma, angle)
    return shift_sum(x, weights, dy, dx).clamp(0, 1)


def zoom_blur(x: Tensor, factors: tuple[float, ...], rand: Rand) -> Tensor:
    """The image averaged with its centre zoomed by every factor in ``factors``.

    The average is one linear map of the pixels, sum_f (Z_f kron Z_f) / (len(factors) + 1) with
    ``Z_f`` from :func:`zoom_matrix`; built once per (size, factors) and applied as one sparse
    product (about 18x faster on CIFAR batches than resampling once per factor).
    """
    if x.shape[-2] != x.shape[-1]:
        raise ValueError(f"zoom_blur needs square images, got {tuple(x.shape[-2:])}")
    return apply_pixel_map(x, _zoom_average(x.shape[-1], tuple(factors))).clamp(0, 1)


@functools.lru_cache(maxsize=16)
def _zoom_average(side: int, factors: tuple[float, ...]) -> Tensor:
    total = torch.eye(side * side, dtype=torch.float64)
    for factor in factors:
        z = zoom_matrix(side, factor)
        total += torch.kron(z, z)
    with warnings.catch_warnings():  # torch calls its CSR layout beta; the product is exact
        warnings.simplefilter("ignore", UserWarning)
        return (total / (len(factors) + 1)).to_sparse_csr()
