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

# torchvision's gray: ITU-R 601-2 luma with its rounded red weight.
GRAY = torch.tensor([0.2989, 0.587, 0.114])[:, None, None]


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
    weights = GRAY.to(x.device, x.dtype)
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


def random_resized_crop(
    x: Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    gen: torch.Generator | None = None,
) -> Tensor:
    """torchvision's ``RandomResizedCrop(size=(H, W), scale, ratio, antialias=False)`` per image:
    a crop of area ``scale`` x H x W and aspect ratio log-uniform in ``ratio`` (10 draws, the
    first that fits; else the whole image clamped to ``ratio``), resized back to H x W
    bilinearly (``align_corners=False``, source coordinates clamped into the crop)."""
    b, _, h, w = x.shape
    device = "cpu" if gen is not None else x.device
    area = torch.empty(b, 10, device=device).uniform_(*scale, generator=gen) * (h * w)
    log_ratio = torch.empty(b, 10, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=gen
    )
    aspect = torch.exp(log_ratio)
    cw = torch.round(torch.sqrt(area * aspect)).long()
    ch = torch.round(torch.sqrt(area / aspect)).long()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.float().argmax(1)
    pick = torch.arange(b, device=device)
    cw, ch, ok = cw[pick, first], ch[pick, first], fits.any(1)
    # torchvision's fallback: the centre crop of the whole image clamped to ``ratio``.
    fh, fw = h, w
    if w / h < ratio[0]:
        fh = round(w / ratio[0])
    elif w / h > ratio[1]:
        fw = round(h * ratio[1])
    cw, ch = torch.where(ok, cw, fw), torch.where(ok, ch, fh)
    u = torch.rand(b, 2, device=device, generator=gen)
    top = torch.where(ok, (u[:, 0] * (h - ch + 1)).long(), (h - ch) // 2)
    left = torch.where(ok, (u[:, 1] * (w - cw + 1)).long(), (w - cw) // 2)
    return _resize_crops(x, *(t.to(x.device) for t in (top, left, ch, cw)))


def _axis(start: Tensor, length: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear source indices (i0, i1) and weight of i1 for ``size`` outputs over each crop
    [start, start + length), as ``F.interpolate(align_corners=False)`` places them."""
    out = torch.arange(size, device=start.device, dtype=torch.float32)
    src = ((out[None] + 0.5) * (length[:, None].float() / size) - 0.5).clamp(min=0)
    i0 = src.floor().long()
    weight = src - i0
    i0 = torch.minimum(i0, length[:, None] - 1)
    i1 = torch.minimum(i0 + 1, length[:, None] - 1)
    return start[:, None] + i0, start[:, None] + i1, weight


def _resize_crops(x: Tensor, top: Tensor, left: Tensor, ch: Tensor, cw: Tensor) -> Tensor:
    """Each image's crop [top, top + ch) x [left, left + cw) resized bilinearly to its H x W."""
    b, _, h, w = x.shape
    r0, r1, wr = _axis(top, ch, h)
    c0, c1, wc = _axis(left, cw, w)
    every = torch.arange(b, device=x.device)[:, None, None]
    pixels = x.permute(0, 2, 3, 1)

    def at(rows: Tensor, cols: Tensor) -> Tensor:
        return pixels[every, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]

    wr, wc = wr[:, :, None, None].to(x.dtype), wc[:, None, :, None].to(x.dtype)
    upper = at(r0, c0) * (1 - wc) + at(r0, c1) * wc
    lower = at(r1, c0) * (1 - wc) + at(r1, c1) * wc
    return (upper * (1 - wr) + lower * wr).permute(0, 3, 1, 2)


def random_flip(x: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Each image flipped left-right with probability 0.5 (``RandomHorizontalFlip()``)."""
    device = "cpu" if gen is not None else x.device
    flip = (torch.rand(len(x), device=device, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_grayscale(x: Tensor, p: float, gen: torch.Generator | None = None) -> Tensor:
    """torchvision's ``RandomGrayscale(p)`` on RGB images: with probability ``p`` per image, its
    gray (0.2989 R + 0.587 G + 0.114 B) in all three channels."""
    device = "cpu" if gen is not None else x.device
    chosen = (torch.rand(len(x), device=device, generator=gen) < p).to(x.device)
    weights = GRAY.to(x.device, x.dtype)
    gray = (x * weights).sum(1, keepdim=True).expand_as(x)
    return torch.where(chosen[:, None, None, None], gray, x)


def crop_flip_jitter(
    x: Tensor, mean: Tensor, std: Tensor, pad: int = 4, jitter: float = 0.2
) -> Tensor:
    """The colour-image recipe on normalized batches: random crop (black padding), horizontal
    flip, colour jitter in [0, 1] space; ``mean`` / ``std``: the normalization, [C, 1, 1]."""
    mean, std = mean.to(x.device, x.dtype), std.to(x.device, x.dtype)
    x = crop_flip(x, pad, fill=(-mean / std).flatten())  # black, as padding an image is
    return (color_jitter(x * std + mean, jitter) - mean) / std
