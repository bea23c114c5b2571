"""``mnist``: MNIST from its official IDX files, with engine corruptions and Fashion-MNIST OOD.

Files, under ``data.root`` (default ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``), in
torchvision's layout, so an existing torchvision data folder works as it is (``.gz`` copies too)::

    MNIST/raw/train-images-idx3-ubyte     MNIST/raw/train-labels-idx1-ubyte
    MNIST/raw/t10k-images-idx3-ubyte      MNIST/raw/t10k-labels-idx1-ubyte
    FashionMNIST/raw/t10k-images-idx3-ubyte   FashionMNIST/raw/t10k-labels-idx1-ubyte
    mnist_c/<corruption>/test_images.npy      mnist_c/<corruption>/test_labels.npy  (cid=mnistc)

- **Splits.** The official 60,000 / 10,000 split; ``dev`` is 10% of the training images,
  stratified by class and fixed by ``split_seed`` (paper A: 54,000 / 6,000 / 10,000).
- **Normalization.** mean 0.1307, std 0.3081 (paper A.1), after any corruption.
- **CID**, by ``data.cid``:

  - ``engine`` (default): the test split under 17 of the engine's 19 corruptions
    (``uqbench.datamodules.corruptions``, CIFAR-10-C's severity table) at severities 1-5, seeded
    by (split_seed, corruption, severity). Snow is left out (not defined for MNIST, paper A.3)
    and so is saturate (no effect on gray images).
  - ``mnistc``: the official MNIST-C files (Mu & Gilmer 2019), ``mnist_c/<corruption>/
    test_images.npy`` and ``test_labels.npy`` for its 15 corruptions. MNIST-C publishes one
    strength per corruption, not five (the paper's "severities 1-5 of MNIST-C" do not exist in
    the files): each is evaluated once and recorded as severity 1, so the severity columns of a
    report hold that single level. ``data.corruptions=[...]`` picks a subset.
- **OOD.** ``fashion``: the Fashion-MNIST test split (10,000 images, far OOD; paper A.3).
- **Shifted dev.** Each dev image once under a random corruption and severity.

Missing files are listed all at once, each with its folder and its source, when the options are
checked (before any data is loaded); a file that is not a well-formed IDX file of the expected
shape, or whose labels are out of range or disagree in count with its images, is named corrupt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from uqbench.datamodules.augment import rotate_translate
from uqbench.datamodules.corruptions import CORRUPTIONS, corrupt, frost_photos, shift_each
from uqbench.datamodules.files import check_labels, data_root, load_npy
from uqbench.datamodules.idx import find, read_idx

from uqbench.datamodule import UQDataModule, check_corruptions, stratified_dev
from uqbench.download import Resource, fetch, provenance
from uqbench.errors import ConfigError, DataError

# Snow is not defined for MNIST (paper A.3); saturation leaves gray images unchanged at
# severities 1-3 and only darkens them at 4-5 (the generator's tint seen as luma), so not a CID.
ENGINE_CORRUPTIONS = tuple(c for c in CORRUPTIONS if c not in ("snow", "saturate"))
# The 15 corruptions of the official MNIST-C archive (its ``identity`` folder is clean MNIST).
MNISTC_CORRUPTIONS = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)
CID_SOURCES = {"engine": ENGINE_CORRUPTIONS, "mnistc": MNISTC_CORRUPTIONS}
MEAN, STD = 0.1307, 0.3081
DEV_FRACTION = 0.1
SOURCES = {
    "MNIST": "http://yann.lecun.com/exdb/mnist/ "
    "(or torchvision.datasets.MNIST(root, download=True), or data.download=true)",
    "FashionMNIST": "https://github.com/zalandoresearch/fashion-mnist "
    "(or torchvision.datasets.FashionMNIST(root, download=True), or data.download=true)",
    "mnist_c": "https://zenodo.org/records/3239543 (mnist_c.zip, or data.download=true)",
}
# The MNIST-C archive on Zenodo, with the MD5 Zenodo publishes; its top folder is mnist_c/.
MNISTC = Resource(
    "https://zenodo.org/records/3239543/files/mnist_c.zip",
    "4b34b33045869ee6d424616cd3a65da3",
    "mnist_c",
    unpack=True,
)
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

# SHA-256 of the official files' content, decompressed from the archives whose MD5s are above
# (the MD5s are of the .gz, so an extracted copy needs these). Published by two independent
# projects that verify MNIST / Fashion-MNIST downloads against them (they agree on MNIST); not
# recomputed here, where the archives cannot be fetched.
_RAW_SHA256_TABLE = """\
MNIST train-images-idx3-ubyte ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
MNIST train-labels-idx1-ubyte 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
MNIST t10k-images-idx3-ubyte 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
MNIST t10k-labels-idx1-ubyte ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
FashionMNIST t10k-images-idx3-ubyte 5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
FashionMNIST t10k-labels-idx1-ubyte 0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
"""
RAW_SHA256 = {
    (d, name): digest for d, name, digest in map(str.split, _RAW_SHA256_TABLE.splitlines())
}


def resource(dataset: str, name: str) -> Resource:
    """The published ``.gz`` of one IDX file, landing in ``<dataset>/raw/``."""
    return Resource(
        f"{MIRRORS[dataset]}{name}.gz", MD5[(dataset, name)], f"{dataset}/raw/{name}.gz"
    )


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
    if len(images) == 0:
        raise DataError(f"{folder / image_name} holds no images; replace it with the official file")
    if labels.max(initial=0) > 9:
        raise DataError(f"{folder / label_name} is corrupt: a label is {labels.max()}, not 0-9")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


def read_mnistc(root: Path, corruption: str, count: int) -> tuple[Tensor, Tensor]:
    """Images [count, 1, 28, 28] in [0, 1] and labels of one MNIST-C test corruption, checked.

    The official arrays are [N, 28, 28, 1] 8-bit levels (uint8, or floats holding the same
    whole levels); anything else is named corrupt."""
    folder = root / "mnist_c" / corruption
    images = load_npy(folder / "test_images.npy", mmap=False)
    labels = load_npy(folder / "test_labels.npy", mmap=False)
    if images.shape not in ((count, 28, 28, 1), (count, 28, 28)):
        raise DataError(
            f"{folder / 'test_images.npy'} is corrupt or not this test set: {images.shape}, "
            f"expected ({count}, 28, 28, 1)"
        )
    levels = images.astype(np.float32)
    if images.dtype != np.uint8 and (
        not np.issubdtype(images.dtype, np.floating)
        or levels.min(initial=0) < 0
        or levels.max(initial=0) > 255
        or not np.array_equal(levels, np.round(levels))
    ):
        raise DataError(
            f"{folder / 'test_images.npy'} is corrupt: {images.dtype} values that are not "
            f"8-bit levels 0-255"
        )
    check_labels(folder / "test_labels.npy", labels, count, 10)
    x = torch.from_numpy(levels.reshape(count, 1, 28, 28) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


class MNIST(UQDataModule):
    """MNIST with engine CID and Fashion-MNIST OOD (see the module docstring).

    Args:
        root: the data folder (default ``$UQBENCH_DATA`` or ``~/.cache/uqbench/data``).
        augment: paper A.1's training augmentation, on the device: rotation within +-10
            degrees and translation by up to 2 pixels.
        download: fetch missing files from the official mirrors (MD5-checked).
        cid: ``engine`` (the engine's corruptions at severities 1-5) or ``mnistc`` (the
            official MNIST-C files, one level each).
        corruptions: the CID corruptions evaluated (default: all of the chosen source's).
    """

    num_classes = 10
    input_shape = (1, 28, 28)
    default_backbone = "digits-cnn"
    default_max_epochs = 50  # paper B.2: Adam, cosine 1e-3 -> 1e-5 over 50 epochs, batch 256
    recipe_steps = 211 * 50  # 54,000 training digits at batch 256, 50 epochs
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
        cid: str = "engine",
        corruptions: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed)
        if cid not in CID_SOURCES:
            raise ConfigError(f"data.cid={cid!r} is not a CID source; choose engine or mnistc")
        available = CID_SOURCES[cid]
        chosen = available if corruptions is None else tuple(corruptions)
        check_corruptions(chosen, available, f"data.cid={cid}")
        self.cid, self.corruptions = cid, chosen
        self.severities = (1,) if cid == "mnistc" else (1, 2, 3, 4, 5)
        self.root, self.download, self.augmentation = data_root(root), download, augment
        self._test_images: Tensor | None = None

    def _missing(self) -> list[tuple[Path, str, str]]:
        missing = []
        for (dataset, _), names in FILES.items():
            folder = self.root / dataset / "raw"
            missing += [(folder, n, dataset) for n in names if find(folder, n) is None]
        if self.cid == "mnistc":
            for corruption in self.corruptions:
                folder = self.root / "mnist_c" / corruption
                missing += [
                    (folder, n, "mnist_c")
                    for n in ("test_images.npy", "test_labels.npy")
                    if not (folder / n).is_file()
                ]
        return missing

    def check_files(self) -> None:
        """Every missing file, with its folder and source, in one error (after downloading
        them when ``download`` is on)."""
        if self.download:
            for _, name, dataset in self._missing():
                if dataset != "mnist_c":
                    fetch(resource(dataset, name), self.root)
            if any(d == "mnist_c" for *_, d in self._missing()):
                if (self.root / MNISTC.target).exists():
                    raise DataError(
                        f"{self.root / MNISTC.target} exists but lacks files data.cid=mnistc "
                        f"reads; move it aside so data.download=true can fetch the archive"
                    )
                fetch(MNISTC, self.root)
            frost_photos.fetch_missing(self.root)
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
        """Each file read, relative to the root: official or not, by the published MD5 of a
        ``.gz`` or the official content's SHA-256 of an extracted file."""
        record = {}
        for (dataset, _), names in FILES.items():
            for name in names:
                path = find(self.root / dataset / "raw", name)
                if path is None:
                    continue
                key = str(path.relative_to(self.root))
                if path.suffix == ".gz":
                    record[key] = provenance(path, MD5[(dataset, name)])
                else:
                    record[key] = provenance(path, None, RAW_SHA256[(dataset, name)])
        if self.cid == "mnistc":
            for corruption in self.corruptions:
                for name in ("test_images.npy", "test_labels.npy"):
                    record[f"mnist_c/{corruption}/{name}"] = (
                        "no published checksum (the published MD5 is of mnist_c.zip)"
                    )
        return record | frost_photos.provenance(self.root)

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
        self._frost = frost_photos.find(self.root)
        # The evaluation-only files are checked now, before any training, not after it.
        self._fashion = read_split(self.root, "FashionMNIST", "test")[0]
        if self.cid == "mnistc":
            for corruption in self.corruptions:
                read_mnistc(self.root, corruption, len(self._test_labels))

    @staticmethod
    def normalize(x: Tensor) -> Tensor:
        return (x - MEAN) / STD

    def cid_set(self, corruption: str, severity: int) -> Dataset:
        self.setup()
        if self.cid == "mnistc":
            x, y = read_mnistc(self.root, corruption, len(self._test_labels))
            return TensorDataset(self.normalize(x), y)
        x = corrupt(
            self._test_images, corruption, severity, self.split_seed, frost_photos=self._frost
        )
        return TensorDataset(self.normalize(x), self._test_labels)

    def dev_shift_set(self) -> Dataset:
        # Always the engine's corruptions: MNIST-C's files are corrupted test images.
        self.setup()
        x = shift_each(
            self._dev_images, ENGINE_CORRUPTIONS, self.split_seed + 1, frost_photos=self._frost
        )
        return TensorDataset(self.normalize(x), self._dev_labels)

    def ood_set(self, name: str) -> Dataset:
        if name not in self.ood_names:
            raise KeyError(f"mnist has no OOD set {name!r}; its sets: {self.ood_names}")
        self.setup()
        x = self._fashion
        return TensorDataset(self.normalize(x), torch.full((len(x),), -1, dtype=torch.long))
