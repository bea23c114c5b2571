"""A contact sheet of the engine's corruptions: people look at corruptions, they don't read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import CORRUPTIONS, TABLES, corrupt, table_for


def sample_photos(count: int, side: int, channels: int = 3) -> Tensor:
    """[count, channels, side, side] crops in [0, 1] of the two photos scikit-learn ships,
    averaged down to ``side`` (gray when ``channels`` is 1) and stored in 8 bits (k / 255), as
    the data sets' images are: the corruptions take the same paths as on real data."""
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(p).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    crops = []
    for k in range(count):
        photo = photos[k % len(photos)]
        h, w = photo.shape[-2:]
        size = min(h, w) // 2
        top, left = (h - size) * (k // 2 % 3) // 2, (w - size) * (k % 3) // 2
        crop = photo[:, top : top + size, left : left + size]
        crops.append(F.adaptive_avg_pool2d(crop, side))
    images = torch.stack(crops)
    images = images.mean(1, keepdim=True) if channels == 1 else images
    return torch.round(images * 255) / 255


def row_names(table: str, frost_photos: Any = None) -> list[str]:
    """The sheet's row labels: each corruption of ``table``; frost says which frost it is."""
    frost = "frost (generator's photos)" if frost_photos is not None else "frost (procedural)"
    return [frost if n == "frost" else n for n in CORRUPTIONS if n in TABLES[table]]


def contact_sheet(
    images: Tensor,
    table: str | None = None,
    seed: int = 0,
    zoom: int = 4,
    frost_photos: Any = None,
) -> Tensor:
    """[3, H', W'] grid: one row per corruption of ``table``, and per image the clean image
    followed by severities 1-5; every pixel enlarged ``zoom`` times (nearest)."""
    table = table or table_for(min(images.shape[-2:]))
    rows = []
    for name in (n for n in CORRUPTIONS if n in TABLES[table]):
        cells = []
        for image in images:
            cells.append(image)
            cells += [
                corrupt(image[None], name, s, seed, table, frost_photos)[0] for s in range(1, 6)
            ]
        rows.append(torch.cat([F.pad(c, (1, 1, 1, 1), value=1.0) for c in cells], -1))
    sheet = torch.cat(rows, -2)
    sheet = sheet.expand(3, -1, -1) if sheet.shape[0] == 1 else sheet
    return sheet.repeat_interleave(zoom, -1).repeat_interleave(zoom, -2)


def write_contact_sheet(
    path: Path,
    images: Tensor,
    table: str | None = None,
    seed: int = 0,
    frost_photos: Any = None,
) -> Path:
    """Write :func:`contact_sheet` as a PNG at ``path`` (through a temporary name), each row
    labelled in a left margin (:func:`row_names`: frost says whether it is the generator's) and
    each column in a header (``clean``, then severities ``s1``-``s5``, per photo)."""
    from PIL import Image, ImageDraw

    path = Path(path)
    table = table or table_for(min(images.shape[-2:]))
    sheet = contact_sheet(images, table, seed, frost_photos=frost_photos)
    pixels = (sheet.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    names = row_names(table, frost_photos)
    margin, row_height = 8 * max(len(n) for n in names) + 8, pixels.shape[0] // len(names)
    header = 16
    canvas = Image.new("RGB", (pixels.shape[1] + margin, pixels.shape[0] + header), "white")
    canvas.paste(Image.fromarray(pixels), (margin, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "corruption", fill="black")
    columns = ["clean", "s1", "s2", "s3", "s4", "s5"] * len(images)
    width = pixels.shape[1] / len(columns)
    for k, label in enumerate(columns):
        draw.text((margin + k * width + width / 2 - 3 * len(label), 2), label, fill="black")
    for k, name in enumerate(names):
        draw.text((4, header + k * row_height + row_height // 2 - 5), name, fill="black")
    partial = path.with_name(path.name + ".partial.png")
    canvas.save(partial, format="PNG")
    partial.replace(path)
    return path
