"""The image corruption engine: the 19 corruptions of CIFAR-10-C on batches of tensors.

``corrupt(x, name, severity, seed)`` maps a batch ``x`` [B, C, H, W] with values in [0, 1] (1 or
3 channels, any device) to a batch of the same shape in [0, 1] at severity 1 (mild) to 5
(strong), with the formulas of Hendrycks & Dietterich's generators (see each family's module)
and the severity table for the image size (:mod:`.severity`). The outputs are 8-bit levels
(``floor(255 y) / 255``), as the published files are. Randomness comes from one generator seeded
by (seed, name, severity) and drawn on the CPU, so a triple gives the same images on every
device and for every batch that holds the same images in the same order.

The 15 benchmark corruptions come first, then the 4 extra ones (speckle noise, gaussian blur,
spatter, saturate) that CIFAR-10-C also publishes.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .blur import defocus_blur, gaussian_blur, glass_blur, motion_blur, zoom_blur
from .digital import brightness, contrast, elastic_transform, jpeg_compression, pixelate, saturate
from .noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from .ops import Rand
from .severity import TABLES, table_for
from .weather import fog, frost, snow, spatter

Corruption = Callable[[Tensor, object, Rand], Tensor]

CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    "saturate": saturate,
}
BENCHMARK = tuple(CORRUPTIONS)[:15]
EXTRA = tuple(CORRUPTIONS)[15:]

__all__ = ["BENCHMARK", "CORRUPTIONS", "EXTRA", "TABLES", "corrupt", "shift_each", "table_for"]


def corrupt(
    x: Tensor,
    corruption: str,
    severity: int,
    seed: int,
    table: str | None = None,
    frost_photos: Any = None,
) -> Tensor:
    """One corruption at one severity on a batch in [0, 1], deterministic for (seed, name,
    severity). ``table``: a key of ``TABLES``; by default the one for the image size.
    ``frost_photos``: the generator's frost photographs (:mod:`.frost_photos`) for frost; the
    procedural texture without them."""
    table = table or table_for(min(x.shape[-2:]))
    if table not in TABLES:
        raise ValueError(f"unknown severity table {table!r}; known: {', '.join(TABLES)}")
    if corruption not in TABLES[table]:
        raise ValueError(
            f"unknown corruption {corruption!r} for the {table} table; known: "
            f"{', '.join(TABLES[table])}"
        )
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1-5, got {severity}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 1 or 3, H, W], got {tuple(x.shape)}")
    if len(x) == 0:  # nothing to corrupt (and libjpeg refuses an empty list)
        return x.float().clone()
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{corruption}/{severity}".encode()))
    params = TABLES[table][corruption][severity - 1]
    function = CORRUPTIONS[corruption]
    if corruption == "frost" and frost_photos is not None:
        function = functools.partial(frost, photos=frost_photos)
    y = function(x.float(), params, Rand(gen, x.device))
    if y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        y = y.clone()  # never round the caller's images in place
    # 8-bit levels like the published files; the epsilon keeps k/255 at k in float32. In place:
    # the same operations in the same order (the same values), without four 4-byte copies.
    return y.clamp_(0, 1).mul_(255).add_(1e-3).floor_().div_(255)


def shift_each(
    x: Tensor, names: tuple[str, ...], seed: int, table: str | None = None, frost_photos: Any = None
) -> Tensor:
    """Each image of ``x`` once under a corruption and severity drawn uniformly at random
    (generator seeded by ``seed``): a shifted copy, e.g. the CID half of a dev mix."""
    gen = torch.Generator().manual_seed(seed)
    kinds = torch.randint(len(names), (len(x),), generator=gen)
    levels = torch.randint(1, 6, (len(x),), generator=gen)
    out = x.clone()
    for k, name in enumerate(names):
        for severity in range(1, 6):
            chosen = ((kinds == k) & (levels == severity)).to(x.device)
            if chosen.any():
                y = corrupt(out[chosen], name, severity, seed, table, frost_photos)
                out[chosen] = y.to(x.dtype)
    return out
