"""``tinyimagenet``: Tiny-ImageNet-200 and Tiny-ImageNet-C, with held-out classes as OOD.

Files, under ``data.root`` (default ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``), in the
official archives' layout::

    tiny-imagenet-200/wnids.txt                                  (the 200 class ids)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG                 (500 per class)
    tiny-imagenet-200/val/images/val_<k>.JPEG, val/val_annotations.txt   (50 per class)
    Tiny-ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG        (the val images, corrupted)

- **Classes and OOD.** The paper's OOD set for Tiny-ImageNet is "a disjoint 200-class slice of
  ImageNet-1k", which needs an ImageNet account. From what anyone can download, the same rule
  (disjoint classes, same image statistics) is met by holding classes out: 40 of the 200 wnids,
  chosen by a fixed permutation (seed 0, independent of ``split_seed`` so every run has the same
  task), are never trained on; their 2,000 val images are the OOD set ``heldout``. The ID task
  has the other 160 classes (``num_classes`` 160), in sorted wnid order.
- **Splits.** ``train``: the 160 classes' train images minus ``dev`` (10%, stratified, fixed by
  ``split_seed``); ``test`` (ID): their 8,000 val images. 64x64 RGB (gray JPEGs are expanded),
  normalized with ImageNet's mean and std (paper A.1). Images are held as 8-bit (1 GB for the
  train split) and normalized as they are read.
- **CID.** Tiny-ImageNet-C's 15 corruptions at severities 1-5 on the ID classes' val images,
  decoded set by set; ``data.corruptions`` picks a subset. **Shifted dev**: each dev image once
  under an engine corruption (the Tiny-ImageNet table) at a random severity.
- **Recipe** (paper B.2): SGD momentum 0.9, weight decay 1e-4, cosine 0.15 -> 1e-4 over 220
  epochs, batch 128, MobileNetV2 x0.5; augmentation on the device (paper A.1): random resized
  crop back to 64x64 (scale 0.8-1.0), horizontal flip, colour jitter 0.2, random grayscale 0.1.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from uqbench.datamodules.augment import (
    color_jitter,
    random_flip,
    random_grayscale,
    random_resized_crop,
)
from uqbench.datamodules.corruptions import BENCHMARK, frost_photos, shift_each
from uqbench.datamodules.files import data_root

from uqbench.datamodule import (
    NormalizedImages,
    UQDataModule,
    check_corruptions,
    stratified_dev,
)
from uqbench.download import Resource, fetch
from uqbench.errors import DataError

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
FOLDER, C_FOLDER = "tiny-imagenet-200", "Tiny-ImageNet-C"
CLASSES, HELD_OUT = 200, 40
DEV_FRACTION = 0.1
WNID = re.compile(r"n\d{8}")
RESOURCES = {
    FOLDER: Resource(
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        "90528d7ca1a48142e341f4ef8d21d0de",
        FOLDER,
        unpack=True,
    ),
    # Zenodo lists the archive without an MD5 this project could confirm: length-checked only.
    C_FOLDER: Resource(
        "https://zenodo.org/records/2536630/files/Tiny-ImageNet-C.tar", None, C_FOLDER, unpack=True
    ),
}


def normalize(x: Tensor) -> Tensor:
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def decode(paths: list[Path]) -> Tensor:
    """uint8 [N, 3, 64, 64] from JPEG files (gray ones expanded to RGB); a file that is not a
    readable 64x64 JPEG is named corrupt."""
    from torchvision.io import ImageReadMode, decode_jpeg

    images = []
    for start in range(0, len(paths), 1024):
        chunk = paths[start : start + 1024]
        data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in chunk]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError:
            decoded = []
            for path, raw in zip(chunk, data, strict=True):  # find the culprit
                try:
                    decoded.append(decode_jpeg(raw, mode=ImageReadMode.RGB))
                except RuntimeError as exc:
                    raise DataError(f"{path} is corrupt ({exc}); replace it") from None
        for path, image in zip(chunk, decoded, strict=True):
            if image.shape != (3, 64, 64):
                raise DataError(f"{path} is corrupt: {tuple(image.shape)}, not 3x64x64")
        images += decoded
    return torch.stack(images) if images else torch.zeros(0, 3, 64, 64, dtype=torch.uint8)


def Images(images: Tensor, labels: Tensor) -> NormalizedImages:  # noqa: N802 - a dataset
    """8-bit images normalized with ImageNet's statistics as they are read."""
    return NormalizedImages(images, labels, MEAN, STD)


class TinyImageNet(UQDataModule):
    """Tiny-ImageNet-200 / Tiny-ImageNet-C / held-out classes (see the module docstring).

    Args:
        root: the data folder (default ``$UQBENCH_DATA`` or ``~/.cache/uqbench/data``).
        corruptions: the Tiny-ImageNet-C corruptions evaluated (default: all 15).
        augment: the training augmentation (resized crop, flip, colour jitter, grayscale), on
            the device.
        download: fetch missing archives from the official sources and unpack them.
    """

    num_classes = CLASSES - HELD_OUT
    input_shape = (3, 64, 64)
    default_backbone = "mobilenetv2"
    default_max_epochs = 220
    ood_names = ("heldout",)
    recipe = {
        "optimizer": "sgd",
        "lr": 0.15,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "min_lr": 1e-4,
    }

    def __init__(
        self,
        root: str | None = None,
        corruptions: tuple[str, ...] = BENCHMARK,
        batch_size: int = 128,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: bool = True,
        download: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed)
        check_corruptions(tuple(corruptions), BENCHMARK, "Tiny-ImageNet-C")
        self.root, self.corruptions = data_root(root), tuple(corruptions)
        self.augmentation, self.download = augment, download
        self._test: tuple[Tensor, Tensor] | None = None

    # -- files ---------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    def wnids(self) -> list[str]:
        """The 200 class ids of ``wnids.txt``, sorted; anything else is a corrupt file."""
        path = self.folder / "wnids.txt"
        ids = sorted(line.strip() for line in path.read_text().splitlines() if line.strip())
        if len(ids) != CLASSES or len(set(ids)) != CLASSES or not all(map(WNID.fullmatch, ids)):
            raise DataError(f"{path} is corrupt: expected {CLASSES} distinct wnids (n########)")
        return ids

    def class_split(self) -> tuple[list[str], list[str]]:
        """(ID wnids in sorted order, held-out wnids): a fixed permutation, seed 0."""
        ids = self.wnids()
        order = torch.randperm(CLASSES, generator=torch.Generator().manual_seed(0)).tolist()
        held = sorted(ids[i] for i in order[:HELD_OUT])
        return [w for w in ids if w not in held], held

    def _missing(self) -> list[tuple[Path, str]]:
        needed = [
            (self.folder / "wnids.txt", FOLDER),
            (self.folder / "val/val_annotations.txt", FOLDER),
        ]
        missing = [(p, s) for p, s in needed if not p.is_file()]
        if not missing:
            missing += [
                (self.folder / "train" / w / "images", FOLDER)
                for w in self.wnids()
                if not (self.folder / "train" / w / "images").is_dir()
            ]
        missing += [
            (self.root / C_FOLDER / c / str(s), C_FOLDER)
            for c in self.corruptions
            for s in self.severities
            if not (self.root / C_FOLDER / c / str(s)).is_dir()
        ]
        return missing

    def check_files(self) -> None:
        """Every missing file or folder, with its source, in one error (after downloading the
        archives when ``download`` is on)."""
        if self.download:
            for source in dict.fromkeys(s for _, s in self._missing()):
                if not (self.root / RESOURCES[source].target).exists():
                    fetch(RESOURCES[source], self.root)
            frost_photos.fetch_missing(self.root)
        missing = self._missing()
        if missing:
            lines = "\n".join(
                f"  {p}   (from {RESOURCES[s].url}, or data.download=true)" for p, s in missing
            )
            raise DataError(
                f"data=tinyimagenet is missing {len(missing)} file(s) or folder(s) under "
                f"data.root={self.root}:\n{lines}\nUnpack the official archives there, or point "
                f"data.root (or UQBENCH_DATA) at a folder that has them; data.corruptions=[...] "
                f"evaluates a subset of Tiny-ImageNet-C."
            )

    def val_annotations(self) -> dict[str, str]:
        """val image file name -> wnid, from ``val_annotations.txt``, checked."""
        path = self.folder / "val/val_annotations.txt"
        known = set(self.wnids())
        table = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in known:
                raise DataError(f"{path} is corrupt at line {number}: {line[:60]!r}")
            table[fields[0]] = fields[1]
        return table

    # -- sets ----------------------------------------------------------------------------------

    def _val_split(self, wnids: list[str]) -> tuple[Tensor, Tensor]:
        index = {w: i for i, w in enumerate(wnids)}
        chosen = sorted((f, w) for f, w in self.val_annotations().items() if w in index)
        paths = [self.folder / "val/images" / f for f, _ in chosen]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise DataError(
                f"{len(absent)} val image(s) named in val_annotations.txt are missing, e.g. "
                f"{absent[0]}; the folder is incomplete: unpack the official archive again"
            )
        return decode(paths), torch.tensor([index[w] for _, w in chosen], dtype=torch.long)

    def data_files(self) -> dict[str, str]:
        """The frost the engine's shifted dev copy uses: the generator's photographs or not."""
        return frost_photos.provenance(self.root)

    def setup(self, stage: str | None = None) -> None:
        if self._test is not None:
            return
        self.check_files()
        self._frost = frost_photos.find(self.root)
        ids, _ = self.class_split()
        paths, labels = [], []
        for label, wnid in enumerate(ids):
            files = sorted((self.folder / "train" / wnid / "images").glob("*.JPEG"))
            paths += files
            labels += [label] * len(files)
        images, y = decode(paths), torch.tensor(labels, dtype=torch.long)
        train, dev = stratified_dev(y, DEV_FRACTION, self.split_seed)
        self.train_set = Images(images[train], y[train])
        self.dev_set = Images(images[dev], y[dev])
        self._dev = (images[dev], y[dev])
        self._test = self._val_split(ids)
        self.test_set = Images(*self._test)

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.augmentation:
            return x, y
        mean, std = MEAN.to(x.device), STD.to(x.device)
        x = random_flip(random_resized_crop(x * std + mean, scale=(0.8, 1.0)))
        return (random_grayscale(color_jitter(x, 0.2), 0.1) - mean) / std, y

    def cid_set(self, corruption: str, severity: int) -> Dataset:
        self.setup()
        ids, _ = self.class_split()
        paths, labels = [], []
        for label, wnid in enumerate(ids):
            folder = self.root / C_FOLDER / corruption / str(severity) / wnid
            files = sorted(folder.glob("*.JPEG"))
            if not files:
                raise DataError(f"{folder} has no images; the Tiny-ImageNet-C folder is incomplete")
            paths += files
            labels += [label] * len(files)
        return Images(decode(paths), torch.tensor(labels, dtype=torch.long))

    def dev_shift_set(self) -> Dataset:
        self.setup()
        images, labels = self._dev
        shifted = shift_each(
            images.float() / 255, BENCHMARK, self.split_seed + 1, "tinyimagenet", self._frost
        )
        return Images(torch.round(shifted * 255).to(torch.uint8), labels)

    def ood_set(self, name: str) -> Dataset:
        if name not in self.ood_names:
            raise KeyError(f"tinyimagenet has no OOD set {name!r}; its sets: {self.ood_names}")
        self.setup()
        _, held = self.class_split()
        images, _ = self._val_split(held)
        return Images(images, torch.full((len(images),), -1, dtype=torch.long))
