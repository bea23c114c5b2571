"""Batched building blocks of the corruptions: padding, filters, resampling, colour, noise maps.

Every function takes images ``x`` of shape [B, C, H, W] (float, any device) unless it says
otherwise, and computes for the whole batch at once. Each names the reference it reproduces
(scipy.ndimage, PIL, OpenCV, scikit-image), and ``tests/test_corruptions.py`` holds it to that
reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class Rand:
    """Random draws from one CPU ``torch.Generator``, placed on ``device``.

    Drawing on the CPU makes a (seed, corruption, severity) give the same images on every
    device; the draws are small next to the images they perturb.
    """

    def __init__(self, gen: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.gen, self.device = gen, torch.device(device)

    # Scaled in place: the values of ``draw * scale + shift``, without two more batch-sized
    # tensors; skipped for the identity, which leaves every value as it is.

    def normal(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> Tensor:
        return _affine_(torch.randn(shape, generator=self.gen), std, mean).to(self.device)

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> Tensor:
        draw = torch.rand(shape, generator=self.gen)
        return _affine_(draw, high - low, low).to(self.device)

    def integers(
        self, low: int, high: int, shape: tuple[int, ...], dtype: torch.dtype = torch.long
    ) -> Tensor:
        """Integers in [low, high) (NumPy's ``randint`` convention); ``dtype`` only stores them
        (the same numbers for every dtype that holds the range)."""
        return torch.randint(low, high, shape, generator=self.gen, dtype=dtype).to(self.device)

    def poisson(self, rate: Tensor) -> Tensor:
        return torch.poisson(rate.detach().cpu().float(), generator=self.gen).to(rate.device)

    def unit_doubles(self, n: int) -> Tensor:
        """n float64 uniforms in [0, 1) on the CPU: the input of table samplers, which draw
        by inversion and need more than float32's 24 bits."""
        return torch.rand(n, generator=self.gen, dtype=torch.float64)


def _affine_(t: Tensor, scale: float, shift: float) -> Tensor:
    if (scale, shift) != (1, 0):
        t.mul_(scale).add_(shift)
    return t


# -- padding and filtering --------------------------------------------------------------------

PAD_MODES = ("nearest", "reflect", "mirror")  # scipy.ndimage's names


def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source index of each padded position along an axis of length ``n`` (scipy's modes:
    ``nearest`` repeats the edge, ``reflect`` is half-sample symmetric (d c b a | a b c d),
    ``mirror`` is whole-sample symmetric (d c b | a b c d), OpenCV's REFLECT_101)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if n == 1:
        return torch.zeros_like(i)
    if mode == "reflect":
        period = 2 * n
        i = i % period
        return torch.where(i < n, i, period - 1 - i)
    if mode == "mirror":
        period = 2 * n - 2
        i = i % period
        return torch.where(i < n, i, period - i)
    raise ValueError(f"padding mode {mode!r} is not one of {PAD_MODES}")


def filter_matrix(n: int, taps: Tensor, mode: str) -> Tensor:
    """[n, n] matrix M with (M @ v)[i] = sum_t taps[t] * v[i + t - len(taps) // 2], borders by
    ``mode``: a 1-D correlation with its border folded in, so filtering is a matrix product."""
    k = len(taps)
    source = _pad_index(n, k // 2, (k - 1) // 2, mode, torch.device("cpu"))
    rows = torch.arange(n)[:, None].expand(n, k)
    cols = source[torch.arange(n)[:, None] + torch.arange(k)[None, :]]
    m = torch.zeros(n, n, dtype=torch.float64)
    return m.index_put_((rows, cols), taps.double()[None, :].expand(n, k), accumulate=True)


def separable(x: Tensor, row_taps: Tensor, col_taps: Tensor, mode: str) -> Tensor:
    """Correlate every channel with the outer product ``row_taps`` x ``col_taps`` (vertical taps
    first): two matrix products, far faster on small images than a depthwise convolution."""
    rows = filter_matrix(x.shape[-2], row_taps, mode).to(x.device, x.dtype)
    cols = filter_matrix(x.shape[-1], col_taps, mode).to(x.device, x.dtype)
    return rows @ x @ cols.T


def correlate2d(x: Tensor, kernel: Tensor, mode: str = "mirror") -> Tensor:
    """Each channel of each image correlated with one 2-D ``kernel`` [kh, kw], centred at
    (kh // 2, kw // 2), borders by ``mode``: ``scipy.ndimage.correlate`` / ``cv2.filter2D``.

    The kernel is split into separable terms by its singular values (exact to rounding), each
    applied by :func:`separable`.
    """
    u, s, vh = torch.linalg.svd(kernel.double())
    out = torch.zeros_like(x)
    for i in range(len(s)):
        if s[i] <= 1e-12 * s[0]:
            break
        out += separable(x, u[:, i] * s[i], vh[i], mode)
    return out


def gaussian_kernel1d(sigma: float, truncate: float) -> Tensor:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate * sigma + 0.5)``, sums to 1."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def gaussian_filter(
    x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> Tensor:
    """Separable Gaussian over the last two axes: ``scipy.ndimage.gaussian_filter`` (and
    scikit-image's ``gaussian``, which calls it) with the same ``mode`` and ``truncate``."""
    if sigma <= 0:
        return x
    g = gaussian_kernel1d(sigma, truncate)
    return separable(x, g, g, mode)


# -- resampling --------------------------------------------------------------------------------


def pil_box_weights(size_in: int, size_out: int) -> Tensor:
    """[size_out, size_in] weights of PIL's ``Image.resize(..., Image.BOX)`` along one axis.

    PIL samples its filter at input pixel centres within ``support = 0.5 * max(scale, 1)`` of
    each output centre and normalizes: for the box filter, every input pixel whose centre falls
    in the output pixel's window counts once.
    """
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    for out in range(size_out):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filterscale
            weights[out, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        if weights[out].sum() > 0:
            weights[out] /= weights[out].sum()
    return weights


def resize_box(x: Tensor, size: tuple[int, int]) -> Tensor:
    """PIL's BOX resize of every channel to ``size`` (H, W), as two matrix products."""
    rows = pil_box_weights(x.shape[-2], size[0]).to(x.device, x.dtype)
    cols = pil_box_weights(x.shape[-1], size[1]).to(x.device, x.dtype)
    return rows @ x @ cols.T


PIL_PRECISION_BITS = 22  # PIL's fixed point for 8-bit resampling: 32 - 8 - 2 bits


def resize_box_8bit(levels: Tensor, size: tuple[int, int]) -> Tensor:
    """PIL's BOX resize of 8-bit images to ``size`` (H, W), bit for bit: ``levels`` and the
    result are whole levels 0-255 (any float dtype).

    PIL resamples 8-bit images in fixed point: each weight of :func:`pil_box_weights` becomes
    ``int(w * 2**22 + 0.5)``, an output is ``(2**21 + sum(k * p)) >> 22`` clipped to 0-255, and
    the horizontal pass is rounded to 8 bits before the vertical one. Every product and sum
    stays below 2**53, so float64 computes them exactly.
    """
    one = float(1 << PIL_PRECISION_BITS)
    device = levels.device

    def fixed(size_in: int, size_out: int) -> Tensor:
        return torch.floor(pil_box_weights(size_in, size_out) * one + 0.5).to(device)

    rows, cols = fixed(levels.shape[-2], size[0]), fixed(levels.shape[-1], size[1])
    wide = torch.floor((levels.double() @ cols.T + one / 2) / one).clamp_(0, 255)
    return torch.floor((rows @ wide + one / 2) / one).clamp_(0, 255).to(levels.dtype)


def clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """Zoom into the centre by ``factor`` >= 1 and crop back to the input size.

    The centre crop of side ``ceil(side / factor)`` is resized linearly to ``round(crop *
    factor)`` with scipy.ndimage.zoom's corner-aligned grid (``order=1``), then the middle
    ``side`` pixels are kept: the ``clipped_zoom`` of the CIFAR-10-C generator.
    """
    h = x.shape[-2]
    crop = math.ceil(h / factor)
    top = (h - crop) // 2
    patch = x[..., top : top + crop, top : top + crop]
    out = round(crop * factor)
    zoomed = F.interpolate(patch, size=(out, out), mode="bilinear", align_corners=True)
    trim = (out - h) // 2
    return zoomed[..., trim : trim + h, trim : trim + h]


def zoom_matrix(side: int, factor: float) -> Tensor:
    """[side, side] float64 matrix Z with ``clipped_zoom(x, factor) == Z @ x @ Z.T`` for square
    images of ``side``: the corner-aligned linear resize of the centre crop, then the trim."""
    crop = math.ceil(side / factor)
    top = (side - crop) // 2
    out = round(crop * factor)
    trim = (out - side) // 2
    basis = torch.eye(crop, dtype=torch.float64)[None]  # each row an impulse to resize
    resized = F.interpolate(basis, size=out, mode="linear", align_corners=True)[0]  # [crop, out]
    z = torch.zeros(side, side, dtype=torch.float64)
    z[:, top : top + crop] = resized.T[trim : trim + side]
    return z


def apply_pixel_map(x: Tensor, pixel_map: Tensor) -> Tensor:
    """Every channel of every image through one linear map of its pixels: ``pixel_map`` is a
    sparse CSR [H * W, H * W] matrix (output pixel, input pixel), applied as one sparse product,
    which beats a chain of resamplings when each output pixel reads a few inputs."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).T
    out = pixel_map.to(x.device, x.dtype) @ flat
    return out.T.reshape(b, c, h, w)


def shift_sum(x: Tensor, weights: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """sum_i weights[i] * x shifted by (dy[b, i], dx[b, i]) with edge pixels repeated.

    ``weights``: [K]; ``dy``, ``dx``: [B, K] integer shifts per image. The shift-and-add form of
    a motion blur (ImageMagick's ``-motion-blur`` as the CIFAR-10-C generator re-implemented it):
    as there, the sum stops at the first shift that leaves the image, without renormalizing.
    """
    b, c, h, w = x.shape
    inside = (dy.abs() < h) & (dx.abs() < w)
    kept = (inside.long().cumprod(1) == 1).to(x.dtype)  # [B, K]: before the first exit
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    # One index and one shifted copy, reused by every tap: fresh batch-sized buffers per tap
    # cost more in page faults than the gathers themselves.
    index = torch.empty(b, h, w, dtype=torch.long, device=x.device)
    shifted = torch.empty_like(flat)
    for i, weight in enumerate(weights.tolist()):
        src_r = (rows[None, :] - dy[:, i, None]).clamp(0, h - 1)  # [B, H]
        src_c = (cols[None, :] - dx[:, i, None]).clamp(0, w - 1)  # [B, W]
        torch.add(src_r[:, :, None] * w, src_c[:, None, :], out=index)
        torch.gather(flat, 2, index.view(b, 1, h * w).expand(b, c, h * w), out=shifted)
        out += shifted.mul_((weight * kept[:, i])[:, None, None])
    return out.view(b, c, h, w)


def motion_shifts(radius: int, sigma: float, angle_deg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel weights [2r+1] (one-sided Gaussian, sums to 1) and the integer shifts [B, 2r+1] of
    a motion blur of ``radius`` / ``sigma`` along each image's angle (degrees)."""
    width = 2 * radius + 1
    t = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(t**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    a = torch.deg2rad(angle_deg.double().cpu())[:, None]
    # The reference steps along (sin, cos) * width / hypot(...) = (sin, cos): unit steps.
    dy = -torch.ceil(t[None, :] * torch.sin(a) - 0.5).long()
    dx = -torch.ceil(t[None, :] * torch.cos(a) - 0.5).long()
    return weights, dy.to(angle_deg.device), dx.to(angle_deg.device)


def warp(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """Bilinear sample of every image at pixel coordinates ``rows``, ``cols`` [B, H, W].

    ``mode="mirror"`` reflects about the edge pixel centres (OpenCV's BORDER_REFLECT_101, as
    ``cv2.warpAffine`` uses), ``mode="reflect"`` about the pixel edges (scipy's ``reflect``, as
    ``map_coordinates`` uses).
    """
    h, w = x.shape[-2:]
    if mode == "mirror":  # align_corners=True: -1 and 1 are the corner pixels' centres
        gx, gy = 2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1
        align = True
    elif mode == "reflect":  # align_corners=False: -1 and 1 are the outer pixel edges
        gx, gy = (2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1
        align = False
    else:
        raise ValueError(f"warp mode {mode!r} is not 'mirror' or 'reflect'")
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align)


# -- colour ------------------------------------------------------------------------------------


def gray(x: Tensor) -> Tensor:
    """[B, 1, H, W] luma of RGB (OpenCV's RGB2GRAY weights); a 1-channel batch unchanged."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights[None, :, None, None]).sum(1, keepdim=True)


# -- random maps -------------------------------------------------------------------------------


def plasma_fractal(batch: int, mapsize: int, wibbledecay: float, rand: Rand) -> Tensor:
    """[batch, mapsize, mapsize] diamond-square height maps in [0, 1] (the fog of CIFAR-10-C).

    The corners start at 0 and the perturbation (``wibble``, 100 at the coarsest step) shrinks
    by ``wibbledecay`` per halving of the step; maps wrap around like the reference's ``roll``.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64, device=rand.device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        noise = rand.uniform(tuple(total.shape), -wibble, wibble).double()
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(squares)
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled_mean(
            centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        )
        m[:, half::step, 0::step] = wibbled_mean(
            centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        )
        step //= 2
        wibble /= wibbledecay
    m -= m.amin((1, 2), keepdim=True)
    return m.div_(m.amax((1, 2), keepdim=True)).float()


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 2 ** int(np.ceil(np.log2(n)))
