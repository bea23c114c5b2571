"""``mnist``: MNIST from its official IDX files, with engine corruptions and Fashion-MNIST OOD.

Files, under ``data.root`` (default ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``), in
torchvision's layout, so an existing torchvision data folder works as it is (``.gz`` copies too)::

    MNIST/raw/train-images-idx3-ubyte     MNIST/raw/train-labels-idx1-ubyte
    MNIST/raw/t10k-images-idx3-ubyte      MNIST/raw/t10k-labels-idx1-ubyte
    FashionMNIST/raw/t10k-images-idx3-ubyte   FashionMNIST/raw/t10k-labels-idx1-ubyte

- **Splits.** The official 60,000 / 10,000 split; ``dev`` is 10% of the training images,
  stratified by class and fixed by ``split_seed`` (paper A: 54,000 / 6,000 / 10,000).
- **Normalization.** mean 0.1307, std 0.3081 (paper A.1), after any corruption.
- **CID.** The test split under 17 of the engine's 19 corruptions
  (``uqbench.datamodules.corruptions``, CIFAR-10-C's severity table: MNIST-C publishes one
  strength per corruption, not five) at severities 1-5, seeded by (split_seed, corruption,
  severity). Snow is left out (not defined for MNIST, paper A.3) and so is saturate (no effect
  on gray images). The official MNIST-C files are not read yet.
- **OOD.** ``fashion``: the Fashion-MNIST test split (10,000 images, far OOD; paper A.3).
- **Shifted dev.** Each dev image once under a random corruption and severity.

Missing files are listed all at once, each with its folder and its source, when the options are
checked (before any data is loaded); a file that is not a well-formed IDX file of the expected
shape, or whose labels are out of range or disagree in count with its images, is named corrupt.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from uqbench.datamodules.augment import rotate_translate
from uqbench.datamodules.corruptions import CORRUPTIONS, corrupt, shift_each
from uqbench.datamodules.idx import find, read_idx

from uqbench.datamodule import UQDataModule, stratified_dev
from uqbench.download import Resource, fetch, provenance
from uqbench.errors import DataError

# Snow is not defined for MNIST (paper A.3) and saturation does nothing to gray images.
ENGINE_CORRUPTIONS = tuple(c for c in CORRUPTIONS if c not in ("snow", "saturate"))
MEAN, STD = 0.1307, 0.3081
DEV_FRACTION = 0.1
SOURCES = {
    "MNIST": "http://yann.lecun.com/exdb/mnist/ "
    "(or torchvision.datasets.MNIST(root, download=True), or data.download=true)",
    "FashionMNIST": "https://github.com/zalandoresearch/fashion-mnist "
    "(or torchvision.datasets.FashionMNIST(root, download=True), or data.download=true)",
}
FILES = {
    ("MNIST", "train"): ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("MNIST", "test"): ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ("FashionMNIST", "test"): ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The mirrors torchvision downloads from, and the MD5s of the .gz files it publishes.
MIRRORS = {
    "MNIST": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "FashionMNIST": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
MD5 = {
    ("MNIST", "train-images-idx3-ubyte"): "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ("MNIST", "train-labels-idx1-ubyte"): "d53e105ee54ea40749a09fcbcd1e9432",
    ("MNIST", "t10k-images-idx3-ubyte"): "9fb629c4189551a2d022fa330f9573f3",
    ("MNIST", "t10k-labels-idx1-ubyte"): "ec29112dd5afa0611ce80d1b7f02629c",
    ("FashionMNIST", "t10k-images-idx3-ubyte"): "bef4ecab320f06d8554ea6380940ec79",
    ("FashionMNIST", "t10k-labels-idx1-ubyte"): "bb300cfdad3c16e7a12a480ee83cd310",
}


def resource(dataset: str, name: str) -> Resource:
    """The published ``.gz`` of one IDX file, landing in ``<dataset>/raw/``."""
    return Resource(
        f"{MIRRORS[dataset]}{name}.gz", MD5[(dataset, name)], f"{dataset}/raw/{name}.gz"
    )


def data_root(root: str | None) -> Path:
    """``root``, else ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``."""
    return Path(root or os.environ.get("UQBENCH_DATA") or Path.home() / ".cache/uqbench/data")


def read_split(root: Path, dataset: str, split: str) -> tuple[Tensor, Tensor]:
    """Images [N, 1, 28, 28] in [0, 1] and labels [N] of one official split, checked."""
    folder = root / dataset / "raw"
    image_name, label_name = FILES[(dataset, split)]
    images = read_idx(find(folder, image_name) or folder / image_name, 3)
    labels = read_idx(find(folder, label_name) or folder / label_name, 1)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{folder / image_name} is corrupt: images are {images.shape[1:]}, not 28x28"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{folder}: {len(images):,} images but {len(labels):,} labels in {image_name} / "
            f"{label_name}; the pair is corrupt or mismatched"
        )
    if labels.max(initial=0) > 9:
        raise DataError(f"{folder / label_name} is corrupt: a label is {labels.max()}, not 0-9")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


class MNIST(UQDataModule):
    """MNIST with engine CID and Fashion-MNIST OOD (see the module docstring).

    Args:
        root: the data folder (default ``$UQBENCH_DATA`` or ``~/.cache/uqbench/data``).
        augment: paper A.1's training augmentation, on the device: rotation within +-10
            degrees and translation by up to 2 pixels.
        download: fetch missing files from the official mirrors (MD5-checked).
    """

    num_classes = 10
    input_shape = (1, 28, 28)
    default_backbone = "digits-cnn"
    default_max_epochs = 50  # paper B.2: Adam, cosine 1e-3 -> 1e-5 over 50 epochs, batch 256
    recipe = {
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "min_lr": 1e-5,
    }
    corruptions = ENGINE_CORRUPTIONS
    ood_names = ("fashion",)

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: bool = True,
        download: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed)
        self.root, self.download, self.augmentation = data_root(root), download, augment
        self._test_images: Tensor | None = None

    def _missing(self) -> list[tuple[Path, str, str]]:
        missing = []
        for (dataset, _), names in FILES.items():
            folder = self.root / dataset / "raw"
            missing += [(folder, n, dataset) for n in names if find(folder, n) is None]
        return missing

    def check_files(self) -> None:
        """Every missing file, with its folder and source, in one error (after downloading
        them when ``download`` is on)."""
        if self.download:
            for _, name, dataset in self._missing():
                fetch(resource(dataset, name), self.root)
        missing = self._missing()
        if missing:
            lines = "\n".join(
                f"  {folder / name}   (from {SOURCES[d]})" for folder, name, d in missing
            )
            raise DataError(
                f"data=mnist is missing {len(missing)} file(s) under data.root={self.root}:\n"
                f"{lines}\nPut the official files there (extracted or .gz), or point data.root "
                f"(or UQBENCH_DATA) at a folder that has them."
            )

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.augmentation:
            return x, y
        return rotate_translate(x, 10.0, 2, fill=-MEAN / STD), y  # black outside

    def data_files(self) -> dict[str, str]:
        """Each file read, relative to the root: official (the published .gz MD5) or not."""
        record = {}
        for (dataset, _), names in FILES.items():
            for name in names:
                path = find(self.root / dataset / "raw", name)
                if path is None:
                    continue
                key = str(path.relative_to(self.root))
                record[key] = (
                    provenance(path, MD5[(dataset, name)])
                    if path.suffix == ".gz"
                    else "no published checksum (the published MD5 is of the .gz)"
                )
        return record

    def setup(self, stage: str | None = None) -> None:
        if self._test_images is not None:
            return
        self.check_files()
        x, y = read_split(self.root, "MNIST", "train")
        train, dev = stratified_dev(y, DEV_FRACTION, self.split_seed)
        self.train_set = TensorDataset(self.normalize(x[train]), y[train])
        self.dev_set = TensorDataset(self.normalize(x[dev]), y[dev])
        self._dev_images, self._dev_labels = x[dev], y[dev]
        self._test_images, self._test_labels = read_split(self.root, "MNIST", "test")
        self.test_set = TensorDataset(self.normalize(self._test_images), self._test_labels)

    @staticmethod
    def normalize(x: Tensor) -> Tensor:
        return (x - MEAN) / STD

    def cid_set(self, corruption: str, severity: int) -> Dataset:
        self.setup()
        x = corrupt(self._test_images, corruption, severity, self.split_seed)
        return TensorDataset(self.normalize(x), self._test_labels)

    def dev_shift_set(self) -> Dataset:
        self.setup()
        x = shift_each(self._dev_images, self.corruptions, self.split_seed + 1)
        return TensorDataset(self.normalize(x), self._dev_labels)

    def ood_set(self, name: str) -> Dataset:
        if name not in self.ood_names:
            raise KeyError(f"mnist has no OOD set {name!r}; its sets: {self.ood_names}")
        x, _ = read_split(self.root, "FashionMNIST", "test")
        return TensorDataset(self.normalize(x), torch.full((len(x),), -1, dtype=torch.long))
