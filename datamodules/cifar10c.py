"""``cifar10c``: CIFAR-10 with the official CIFAR-10-C files, SVHN (far) and CIFAR-100 (near) OOD.

Files, under ``data.root`` (default ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``), in the
layout of torchvision and of the official archives::

    cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch     (python pickle batches)
    CIFAR-10-C/<corruption>.npy, CIFAR-10-C/labels.npy                (5 x 10,000 images each)
    test_32x32.mat                                                    (SVHN test)
    cifar-100-python/test                                             (CIFAR-100 test)

- **Splits.** The official 50,000 / 10,000 split; ``dev`` is 10% of train, stratified, fixed by
  ``split_seed``. Normalized with the per-channel means (0.4914, 0.4822, 0.4465) and stds
  (0.2023, 0.1994, 0.2010) of paper A.1.
- **CID**, by ``data.cid``:

  - ``files`` (default of ``cifar10c``): each ``CIFAR-10-C/<corruption>.npy`` holds the test
    split under that corruption at severities 1-5, 10,000 images each in order; it is
    memory-mapped and read one severity at a time, so a full evaluation never holds the 950,000
    images.
  - ``engine`` (default of ``cifar10``, the same datamodule without CIFAR-10-C): the test split
    under the engine's 19 corruptions (``uqbench.datamodules.corruptions``, CIFAR-10-C's own
    severity table), generated set by set and seeded by (split_seed, corruption, severity).
    CIFAR-10-C's files are not needed. They are close to the published files but not equal
    (two weather corruptions differ by design; see the engine's ``weather`` module).

  ``data.corruptions`` picks a subset of the 19 (15 + 4 extra); with ``files`` every file named
  must exist.
- **OOD.** ``cifar100`` (near: the CIFAR-100 test split) and ``svhn`` (far: the SVHN test split).
- **Shifted dev.** Each dev image once under a corruption of the engine (not CIFAR-10-C: those
  are test images), at a random severity.

Missing files are all listed at once with their folders and sources when options are checked;
a file that cannot be what it claims (unreadable pickle or ``.npy``, wrong shape or dtype,
labels out of range, counts that disagree) is named corrupt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from uqbench.datamodules.augment import crop_flip_jitter
from uqbench.datamodules.corruptions import CORRUPTIONS as ENGINE
from uqbench.datamodules.corruptions import corrupt, frost_photos, shift_each
from uqbench.datamodules.files import check_labels, data_root, load_npy, load_pickle

from uqbench.datamodule import (
    NormalizedImages,
    UQDataModule,
    check_corruptions,
    stratified_dev,
)
from uqbench.download import Resource, fetch, provenance
from uqbench.errors import ConfigError, DataError

MEAN = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
STD = torch.tensor([0.2023, 0.1994, 0.2010])[:, None, None]
DEV_FRACTION = 0.1
CIFAR10C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
# The official sources with their published MD5s (those torchvision and Zenodo list).
RESOURCES = {
    "cifar-10-batches-py": Resource(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        unpack=True,
    ),
    "cifar-100-python": Resource(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        unpack=True,
    ),
    "CIFAR-10-C": Resource(
        "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",
        "56bf5dcef84df0e2308c6dcbcbbd8499",
        "CIFAR-10-C",
        unpack=True,
    ),
    "test_32x32.mat": Resource(
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
        "test_32x32.mat",
    ),
}
# Published MD5s of single files (the CIFAR-10-C .npy files have none: only the archive's).
FILE_MD5 = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}


def _unpickle(path: Path, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 32, 32, 3] and labels [N] of one CIFAR pickle batch, checked."""
    batch = load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path} is corrupt: not a dict with b'data' and {label_key!r}")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path} is corrupt: data is {data.dtype} {data.shape}, not uint8 [N, 3072]"
        )
    check_labels(path, labels, len(data), classes)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def _to_uint8(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, H, W] (a copy: memory-mapped files are read-only)."""
    return torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()


def _images(images: Tensor, labels: Tensor) -> NormalizedImages:
    return NormalizedImages(images, labels, MEAN, STD)


def _to_tensor(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    copy = np.array(images, dtype=np.uint8)  # a writable copy (memory-mapped files are not)
    return torch.from_numpy(copy).permute(0, 3, 1, 2).float() / 255.0


def normalize(x: Tensor) -> Tensor:
    return (x - MEAN.to(x.device)) / STD.to(x.device)


class CorruptedSlice(Dataset):
    """One severity of a memory-mapped CIFAR-10-C file: read and normalized item by item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, start: int, count: int) -> None:
        self.images, self.labels, self.start, self.count = images, labels, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = _to_tensor(self.images[self.start + i][None])[0]
        return normalize(x), int(self.labels[self.start + i])

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        # A DataLoader asks for a whole batch at once: one read of the memory map and one
        # conversion per batch instead of one per image.
        rows = np.asarray(indices) + self.start
        x = normalize(_to_tensor(self.images[rows]))
        y = torch.from_numpy(np.asarray(self.labels[rows], dtype=np.int64))
        return list(zip(x, y, strict=True))


class CIFAR10C(UQDataModule):
    """CIFAR-10 / CIFAR-10-C / SVHN / CIFAR-100 (see the module docstring).

    Args:
        root: the data folder (default ``$UQBENCH_DATA`` or ``~/.cache/uqbench/data``).
        corruptions: the CIFAR-10-C corruptions evaluated (default: all 19 files).
        augment: paper A.1's training augmentation, on the device: random crop with 4-pixel
            padding, horizontal flip, colour jitter of brightness/contrast/saturation +-0.2.
        download: fetch missing archives from the official sources (MD5-checked, 2.9 GB for
            CIFAR-10-C) and unpack them.
        cid: ``files`` (the official CIFAR-10-C files) or ``engine`` (the engine's corruptions
            of the test split; CIFAR-10-C is not needed); by default ``files`` for
            ``cifar10c`` and ``engine`` for ``cifar10``.
    """

    name = "cifar10c"
    default_cid = "files"
    num_classes = 10
    input_shape = (3, 32, 32)
    default_backbone = "resnet8"
    default_max_epochs = 200  # paper B.2
    recipe_steps = 352 * 200  # 45,000 training images at batch 128, 200 epochs
    ood_names = ("cifar100", "svhn")
    # Paper B.2: SGD momentum 0.9, weight decay 5e-4, cosine 0.2 -> 5e-4, label smoothing 0.1,
    # gradient clipping at global L2 norm 1.0 (batch 128 is the constructor's default).
    recipe = {
        "optimizer": "sgd",
        "lr": 0.2,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "min_lr": 5e-4,
        "label_smoothing": 0.1,
    }
    trainer_defaults = {"gradient_clip_val": 1.0}

    def __init__(
        self,
        root: str | None = None,
        corruptions: tuple[str, ...] = CIFAR10C_CORRUPTIONS,
        batch_size: int = 128,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: bool = True,
        download: bool = False,
        cid: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed)
        cid = cid or self.default_cid
        if cid not in ("files", "engine"):
            raise ConfigError(f"data.cid={cid!r} is not a CID source; choose files or engine")
        self.download, self.augmentation, self.cid = download, augment, cid
        check_corruptions(tuple(corruptions), CIFAR10C_CORRUPTIONS, "CIFAR-10-C")
        self.root, self.corruptions = data_root(root), tuple(corruptions)
        self._test: tuple[Tensor, Tensor] | None = None

    def _needed(self) -> list[tuple[Path, str]]:
        files = [(Path("cifar-10-batches-py") / b, "cifar-10-batches-py") for b in TRAIN_BATCHES]
        files.append((Path("cifar-10-batches-py") / "test_batch", "cifar-10-batches-py"))
        if self.cid == "files":
            files += [(Path("CIFAR-10-C") / f"{c}.npy", "CIFAR-10-C") for c in self.corruptions]
            files.append((Path("CIFAR-10-C") / "labels.npy", "CIFAR-10-C"))
        files.append((Path("test_32x32.mat"), "test_32x32.mat"))
        files.append((Path("cifar-100-python") / "test", "cifar-100-python"))
        return files

    def _missing(self) -> list[tuple[Path, str]]:
        return [(f, src) for f, src in self._needed() if not (self.root / f).is_file()]

    def check_files(self) -> None:
        """Every missing file, with its folder and source, in one error (after downloading
        the archives that hold them when ``download`` is on)."""
        if self.download:
            for source in dict.fromkeys(src for _, src in self._missing()):
                if not (self.root / RESOURCES[source].target).exists():
                    fetch(RESOURCES[source], self.root)
            frost_photos.fetch_missing(self.root)
        missing = self._missing()
        if missing:
            lines = "\n".join(
                f"  {self.root / f}   (from {RESOURCES[s].url}, or data.download=true)"
                for f, s in missing
            )
            without = "; data.cid=engine generates the corruptions instead" * (self.cid == "files")
            raise DataError(
                f"data={self.name} is missing {len(missing)} file(s) under data.root="
                f"{self.root}:\n{lines}\nExtract the official archives there, or point "
                f"data.root (or UQBENCH_DATA) at a folder that has them; data.corruptions=[...] "
                f"evaluates a subset of CIFAR-10-C{without}."
            )

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.augmentation:
            return x, y
        return crop_flip_jitter(x, MEAN, STD), y

    def data_files(self) -> dict[str, str]:
        """Each file read, relative to the root: official (the published MD5) or not."""
        files = {
            str(f): provenance(self.root / f, FILE_MD5.get(str(f)))
            for f, _ in self._needed()
            if (self.root / f).is_file()
        }
        return files | frost_photos.provenance(self.root)

    def setup(self, stage: str | None = None) -> None:
        if self._test is not None:
            return
        self.check_files()
        folder = self.root / "cifar-10-batches-py"
        parts = [_unpickle(folder / b, b"labels", 10) for b in TRAIN_BATCHES]
        x = _to_uint8(np.concatenate([p[0] for p in parts]))
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        train, dev = stratified_dev(y, DEV_FRACTION, self.split_seed)
        self.train_set = _images(x[train], y[train])  # 8-bit: 150 MB for 50,000 images
        self.dev_set = _images(x[dev], y[dev])
        self._dev_images, self._dev_labels = x[dev], y[dev]
        images, labels = _unpickle(folder / "test_batch", b"labels", 10)
        self._test = (_to_uint8(images), torch.from_numpy(labels))
        self.test_set = _images(*self._test)
        self._frost = frost_photos.find(self.root)
        self._check_evaluation_files()

    def _check_evaluation_files(self) -> None:
        """The files read only after training (CIFAR-10-C, SVHN, CIFAR-100), checked now:
        headers, shapes and dtypes without loading their images, CIFAR-100 whole (a pickle)."""
        if self.cid == "files":
            for corruption in self.corruptions:
                self._cid_arrays(corruption)
        self._svhn_header(self.root / "test_32x32.mat")
        _unpickle(self.root / "cifar-100-python" / "test", b"fine_labels", 100)

    def cid_set(self, corruption: str, severity: int) -> Dataset:
        self.setup()
        if self.cid == "engine":
            # The whole test split in one batch: the engine's draws depend on the batch.
            x = self._test[0].float() / 255
            x = corrupt(x, corruption, severity, self.split_seed, frost_photos=self._frost)
            return _images((x * 255).round().to(torch.uint8), self._test[1])
        images, labels = self._cid_arrays(corruption)
        n = len(self._test[1])
        return CorruptedSlice(images, labels, (severity - 1) * n, n)

    def _cid_arrays(self, corruption: str) -> tuple[np.ndarray, np.ndarray]:
        """One CIFAR-10-C file memory-mapped (only its header is read) and the labels, checked
        against the test split."""
        n = len(self._test[1])
        path = self.root / "CIFAR-10-C" / f"{corruption}.npy"
        images = load_npy(path, mmap=True)
        labels = load_npy(self.root / "CIFAR-10-C" / "labels.npy", mmap=False)
        if images.dtype != np.uint8 or images.shape != (5 * n, 32, 32, 3):
            raise DataError(
                f"{path} is corrupt or not this test set: {images.dtype} {images.shape}, "
                f"expected uint8 ({5 * n}, 32, 32, 3) (5 severities x {n} test images)"
            )
        check_labels(path.with_name("labels.npy"), labels, 5 * n, 10)
        return images, labels

    def dev_shift_set(self) -> Dataset:
        self.setup()
        x = self._dev_images.float() / 255
        x = shift_each(x, tuple(ENGINE), self.split_seed + 1, frost_photos=self._frost)
        return TensorDataset(normalize(x), self._dev_labels)

    def ood_set(self, name: str) -> Dataset:
        if name == "cifar100":
            path = self.root / "cifar-100-python" / "test"
            images, _ = _unpickle(path, b"fine_labels", 100)
        elif name == "svhn":
            images = self._svhn(self.root / "test_32x32.mat")
        else:
            raise KeyError(f"cifar10c has no OOD set {name!r}; its sets: {self.ood_names}")
        x = _to_uint8(images)
        return _images(x, torch.full((len(x),), -1, dtype=torch.long))

    @staticmethod
    def _svhn_header(path: Path) -> None:
        """SVHN's ``X`` and ``y`` by their headers (``scipy.io.whosmat``: no data is loaded)."""
        from scipy.io import whosmat

        try:
            variables = {name: (shape, kind) for name, shape, kind in whosmat(path)}
        except Exception as exc:  # noqa: BLE001 - any unreadable .mat is corrupt
            raise DataError(
                f"{path} is corrupt ({type(exc).__name__}: {exc}); replace it"
            ) from None
        shape, kind = variables.get("X", ((), "missing"))
        if kind != "uint8" or len(shape) != 4 or tuple(shape[:3]) != (32, 32, 3):
            raise DataError(f"{path} is corrupt: X is {kind} {shape}, not uint8 [32, 32, 3, N]")
        if "y" not in variables or variables["y"][0][0] != shape[3]:
            raise DataError(f"{path} is corrupt: its labels y do not match its {shape[3]} images")

    @staticmethod
    def _svhn(path: Path) -> np.ndarray:
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
            images, labels = mat["X"], mat["y"].ravel()
        except Exception as exc:  # noqa: BLE001 - any unreadable .mat is corrupt
            raise DataError(
                f"{path} is corrupt ({type(exc).__name__}: {exc}); replace it"
            ) from None
        if images.dtype != np.uint8 or images.shape[:3] != (32, 32, 3):
            raise DataError(
                f"{path} is corrupt: X is {images.dtype} {images.shape}, not [32, 32, 3, N]"
            )
        check_labels(path, labels - 1, images.shape[3], 10)  # SVHN labels are 1-10
        return images.transpose(3, 0, 1, 2)


class CIFAR10(CIFAR10C):
    """``cifar10``: ``cifar10c`` with the engine's corruptions (``data.cid=engine``), for users
    without the CIFAR-10-C files; everything else (files, splits, OOD, recipe) is the same."""

    name = "cifar10"
    default_cid = "engine"
