"""Digital: contrast, brightness, saturate, JPEG, pixelate and elastic (CIFAR-10-C's formulas)."""

from __future__ import annotations

import torch
from torch import Tensor

from .ops import Rand, gaussian_filter, gray, resize_box, resize_box_8bit, warp
from .poisson import lattice_levels


def contrast(x: Tensor, factor: float, rand: Rand) -> Tensor:
    """(x - channel mean) * factor + channel mean."""
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp_(0, 1)


def brightness(x: Tensor, shift: float, rand: Rand) -> Tensor:
    """HSV value + shift (plain x + shift for 1-channel images, as the generator does).

    With hue and saturation fixed every channel is proportional to the value V, so the HSV
    round trip is a rescaling: x * V' / V, and gray V' where V was 0 (a black pixel has no hue).
    """
    if x.shape[1] == 1:
        return (x + shift).clamp_(0, 1)
    value = x.amax(1, keepdim=True)
    new = (value + shift).clamp(0, 1)
    return torch.where(value > 0, x * (new / value.clamp_min(1e-12)), new).clamp_(0, 1)


def saturate(x: Tensor, params: tuple[float, float], rand: Rand) -> Tensor:
    """HSV saturation * scale + shift.

    With hue and value fixed each channel is V - (V - x) * S' / S. A gray pixel (S = 0) has hue
    0 in the HSV convention, red: it becomes (V, V (1 - S'), V (1 - S')), which is how the
    generator tints gray images (its HSV round trip on three equal channels). A 1-channel image
    takes that same round trip on three copies of itself and comes back as the luma of the
    result (:func:`~.ops.gray`): unchanged where S' = 0 (the shift-free severities), darkened
    by 1 - 0.701 S' where the shift tints it.
    """
    scale, shift = params
    if x.shape[1] == 1:
        return gray(saturate(x.expand(-1, 3, -1, -1), params, rand))
    value = x.amax(1, keepdim=True)
    sat = torch.where(value > 0, (value - x.amin(1, keepdim=True)) / value.clamp_min(1e-12), 0)
    new = (sat * scale + shift).clamp(0, 1)
    coloured = value - (value - x) * (new / sat.clamp_min(1e-12))
    red_hue = torch.cat([value, value * (1 - new), value * (1 - new)], 1)
    return torch.where(sat > 0, coloured, red_hue).clamp_(0, 1)


def jpeg_compression(x: Tensor, quality: int, rand: Rand) -> Tensor:
    """Encoded and decoded as JPEG at ``quality`` by libjpeg (torchvision.io), 8-bit input."""
    from torchvision.io import decode_jpeg, encode_jpeg

    device = x.device
    pixels = torch.round(x * 255).to(torch.uint8).cpu()
    encoded = encode_jpeg(list(pixels), quality=int(quality))
    decoded = decode_jpeg(encoded)
    return (torch.stack(decoded).to(device, x.dtype) / 255).reshape(x.shape)


def pixelate(x: Tensor, fraction: float, rand: Rand) -> Tensor:
    """PIL BOX resize to ``int(side * fraction)`` and back.

    The generator resizes 8-bit PIL images, which PIL rounds to 8 bits after each pass; images
    on the 8-bit lattice take that path bit for bit (:func:`resize_box_8bit`). Other images
    (resized digits, say) have no 8-bit original to round to: they are resized in floating
    point by the same weights.
    """
    h, w = x.shape[-2:]
    small_size = (int(h * fraction), int(w * fraction))
    levels = lattice_levels(x)
    if levels is not None:
        small = resize_box_8bit(levels.to(x.dtype), small_size)
        return resize_box_8bit(small, (h, w)).div_(255)
    return resize_box(resize_box(x, small_size), (h, w)).clamp(0, 1)


def elastic_transform(x: Tensor, params: tuple[float, float, float], rand: Rand) -> Tensor:
    """A random affine warp, then a smooth random displacement field.

    ``params`` = (alpha, sigma, affine) as multiples of the image side. The affine moves the
    three points (c+s, c+s), (c+s, c-s), (c-s, c-s) (c the centre, s a third of the side) by up
    to ``affine`` pixels each (``cv2.warpAffine``, mirrored borders); the displacement is uniform
    noise in [-1, 1] smoothed by a Gaussian of ``sigma`` (truncated at 3 sigma) times ``alpha``
    (``map_coordinates``, reflected borders).
    """
    b, _, h, w = x.shape
    alpha, sigma, affine = (v * min(h, w) for v in params)
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float64)
    s = min(h, w) // 3
    src = torch.stack([centre + s, centre + torch.tensor([s, -s]), centre - s])  # (x, y)
    dst = src[None] + rand.uniform((b, 3, 2), -affine, affine).double().cpu()
    # Affine A (2x3) with A [src; 1] = dst, inverted to sample the source of each output pixel.
    ones = torch.ones(3, 1, dtype=torch.float64)
    forward = torch.linalg.solve(torch.cat([src, ones], 1), dst).transpose(1, 2)  # [B, 2, 3]
    full = torch.cat([forward, torch.tensor([[[0.0, 0.0, 1.0]]]).double().expand(b, 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2].to(x.device, x.dtype)
    rows, cols = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype),
        torch.arange(w, device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    points = torch.stack([cols, rows, torch.ones_like(rows)], 0).reshape(3, -1)
    source = (inverse @ points).reshape(b, 2, h, w)
    y = warp(x, source[:, 1], source[:, 0], "mirror")
    dx = gaussian_filter(rand.uniform((b, 1, h, w), -1, 1), sigma, "reflect", truncate=3) * alpha
    dy = gaussian_filter(rand.uniform((b, 1, h, w), -1, 1), sigma, "reflect", truncate=3) * alpha
    return warp(y, rows + dy[:, 0], cols + dx[:, 0], "reflect").clamp(0, 1)
