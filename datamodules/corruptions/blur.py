"""Blur: gaussian, glass, defocus, motion and zoom (CIFAR-10-C's formulas, batched)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
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
    """Blur, quantize to 8 bits, copy into each pixel a random neighbour's value, blur again.

    ``params`` = (sigma, max shift d, iterations). Pixels are visited from the bottom-right
    corner to (d + 1, d + 1), each taking the value of the pixel (dy, dx) away, dy and dx drawn
    from [-d, d): the generator's order and range, so copies build on earlier copies as there.
    The generator's "swap" line ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` acts on NumPy
    views: it copies the neighbour into (h, w) and leaves the neighbour as it was (the right
    side's view of (h, w) already holds the neighbour's value when it is assigned back). The
    published CIFAR-10-C and Tiny-ImageNet-C files were made that way, so this does the same.
    """
    sigma, d, iterations = params
    b, c, h, w = x.shape
    y = (gaussian_filter(x, sigma, "nearest") * 255).floor_().div_(255)
    positions = [(r, col) for r in range(h - d, d, -1) for col in range(w - d, d, -1)]
    shifts = rand.integers(-d, d, (iterations, len(positions), 2, b), torch.int8).cpu().numpy()
    # The copies move pixels' values: follow where each pixel's value comes from. source[p, i]
    # is the pixel of image i whose value sits at pixel p; row-major, so the pixel p of every
    # image is one contiguous row and its partners are one fancy index away in NumPy, a few
    # microseconds per step where torch's per-call overhead was tens.
    index_type = np.int32 if h * w * b < 2**31 else np.int64  # half the memory to touch
    here = np.array([r * w + col for r, col in positions], dtype=index_type)
    source = np.repeat(np.arange(h * w, dtype=index_type)[:, None], b, axis=1)  # [H * W, B]
    flat = source.reshape(-1)
    every = np.arange(b, dtype=index_type)
    for it in range(iterations):
        # shifts[it]: [positions, (dx, dy), b]; partner (r + dy, col + dx) as an index of flat
        dx, dy = shifts[it].astype(index_type).transpose(1, 0, 2)  # each [positions, b]
        partner = (here[:, None] + dy * w + dx) * b + every
        for k, p in enumerate(here):
            source[p] = flat[partner[k]]
    index = torch.from_numpy(source.T.astype(np.int64)).to(x.device)  # [B, H * W]
    y = y.reshape(b, c, h * w).gather(2, index[:, None, :].expand(b, c, h * w))
    return gaussian_filter(y.reshape(b, c, h, w), sigma, "nearest").clamp(0, 1)


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
    return shift_sum(x, weights, dy, dx).clamp_(0, 1)


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
    # Summed sparse, factor by factor: the values of the dense sum (each entry gets the same
    # additions in the same order) without a dense [side^2, side^2] Kronecker product per factor.
    diagonal = torch.arange(side * side).expand(2, -1)
    total = _coo(diagonal, torch.ones(side * side, dtype=torch.float64), side * side)
    for factor in factors:
        total = (total + _kron_sparse(zoom_matrix(side, factor).to_sparse())).coalesce()
    with warnings.catch_warnings():  # torch calls its CSR layout beta; the product is exact
        warnings.simplefilter("ignore", UserWarning)
        return (total / (len(factors) + 1)).to_sparse_csr()


def _kron_sparse(z: Tensor) -> Tensor:
    """``torch.kron(z, z)`` of a sparse COO [n, n] matrix, sparse."""
    n = z.shape[0]
    (rows, cols), values = z.indices(), z.values()
    index = torch.stack(
        [
            (rows[:, None] * n + rows[None, :]).reshape(-1),
            (cols[:, None] * n + cols[None, :]).reshape(-1),
        ]
    )
    return _coo(index, (values[:, None] * values[None, :]).reshape(-1), n * n)


def _coo(index: Tensor, values: Tensor, n: int) -> Tensor:
    return torch.sparse_coo_tensor(index, values, (n, n), check_invariants=False)
