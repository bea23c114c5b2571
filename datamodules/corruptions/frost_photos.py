"""The generator's frost photographs: six public files of the CIFAR-10-C / ImageNet-C generator
(``hendrycks/robustness``, ``ImageNet-C/create_c/frost1.png`` ... ``frost6.jpg``), fetched like
a data set into ``<data.root>/frost/`` (``data.download=true``, or put there by hand).

The generator's frost, per image: one of the first five photographs at random (its
``randint(5)``: ``frost6.jpg`` is never drawn), read by OpenCV (BGR), shrunk by 0.2 for images
of up to 32 pixels and 0.3 for 64 (``cv2.resize``, bilinear), a random crop of the image's size
(top-left in ``[0, side - size)``), turned to RGB, and blended as ``a * x + b * frost`` at the
severity's weights. Without the photographs the engine falls back to its procedural texture
(:func:`.weather.frost_texture`), and a run records which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from uqbench.download import Resource
from uqbench.errors import DataError

from .ops import Rand

FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
SOURCE = "https://raw.githubusercontent.com/hendrycks/robustness/master/ImageNet-C/create_c/"
FOLDER = "frost"
DRAWN = 5  # the generator draws among the first five
# Nobody publishes checksums of these files: a run records them as "no published checksum".
RESOURCES = tuple(Resource(SOURCE + name, None, f"{FOLDER}/{name}") for name in FILES)


@dataclass(frozen=True)
class FrostPhotos:
    """The photographs as OpenCV reads them (BGR uint8 [H, W, 3]) and where they were."""

    folder: Path
    images: tuple[np.ndarray, ...]
    _shrunk: dict = field(default_factory=dict, compare=False, repr=False)

    def shrunk(self, index: int, side: int) -> np.ndarray:
        """Photograph ``index`` shrunk as the generator does for images of ``side`` pixels."""
        factor = 0.2 if side <= 32 else 0.3
        key = (index, factor)
        if key not in self._shrunk:
            self._shrunk[key] = cv2.resize(self.images[index], (0, 0), fx=factor, fy=factor)
        return self._shrunk[key]

    def layer(self, b: int, h: int, w: int, rand: Rand) -> Tensor:
        """[B, 3, H, W] frost crops in [0, 1], RGB: one photograph and one crop per image."""
        picks = rand.integers(0, DRAWN, (b,)).tolist()
        crops = []
        for pick in picks:
            photo = self.shrunk(pick, max(h, w))
            top = int(rand.integers(0, photo.shape[0] - h, (1,)))
            left = int(rand.integers(0, photo.shape[1] - w, (1,)))
            crops.append(photo[top : top + h, left : left + w, ::-1])  # BGR -> RGB
        return torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy()).float() / 255


def _present(root: Path) -> bool:
    return all((Path(root) / FOLDER / name).is_file() for name in FILES)


def find(root: Path) -> FrostPhotos | None:
    """The photographs under ``root/frost``, or None if any is missing; a file OpenCV cannot
    read is named corrupt."""
    if not _present(root):
        return None
    folder = Path(root) / FOLDER
    paths = [folder / name for name in FILES]
    images = []
    for path in paths:
        image = cv2.imread(str(path))
        if image is None or image.ndim != 3 or min(image.shape[:2]) < 64 / 0.3:
            raise DataError(f"{path} is not a readable frost photograph; replace it")
        images.append(image)
    return FrostPhotos(folder, tuple(images))


def provenance(root: Path) -> dict[str, str]:
    """What a run records about its frost: each photograph, or the procedural fallback (by the
    files' presence; :func:`find` reads them and refuses an unreadable one)."""
    folder = Path(root) / FOLDER
    if not _present(root):
        return {
            FOLDER: f"procedural texture: the generator's photographs are not all under "
            f"{folder} (data.download=true fetches them from {SOURCE})"
        }
    return {f"{FOLDER}/{name}": "no published checksum" for name in FILES}


def fetch_missing(root: Path) -> None:
    """Download the photographs missing under ``root/frost`` (``data.download=true``). They
    refine one corruption and have a fallback, so a failed download is a warning, not the end
    of the run: frost then stays procedural, and the run record says so."""
    import sys

    from uqbench.download import fetch

    for resource in RESOURCES:
        if (Path(root) / resource.target).is_file():
            continue
        try:
            fetch(resource, Path(root))
        except DataError as exc:
            print(f"uqbench: warning: frost stays procedural: {exc}", file=sys.stderr)
            try:
                (Path(root) / FOLDER).rmdir()  # the download made it; leave no empty folder
            except OSError:
                pass  # not empty (the user's files), or never made
            return
