"""The datamodule contract: the splits every protocol needs.

- ``train``: fits the model. ``dev``: 10% of the training portion, stratified, fixed by
  ``split_seed`` (never by the training seed); every post-training fit and every tuning choice
  uses it. ``test``: the in-distribution (ID) test split.
- CID: the ID test split under each corruption type at severities 1-5.
- OOD: one or more named sets (``ood_names``, e.g. near and far) from other distributions,
  prepared exactly like the ID inputs; every OOD metric is reported per set and as their mean.
- Shifted dev (optional, ``dev_shift_set``): the dev split under shift (each image corrupted
  once). It is what "the dev mix" (dev + shifted dev) adds: error-predicting maps and tuning
  objectives see errors under shift without touching the test sets. Without it, the dev mix is
  dev alone, and methods that tune on shift (ODIN) refuse to run.

Every dataset yields ``(x, y)``: ``x`` a float tensor of shape ``input_shape``, ``y`` an int
class index in ``[0, num_classes)`` (-1 for OOD). ``setup`` loads the data; ``__init__`` only
stores options (it runs before any data is loaded, when options are checked), and a
datamodule must not reseed global generators (the runner seeds training after ``setup``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def stratified_dev(labels: Tensor, fraction: float, split_seed: int) -> tuple[Tensor, Tensor]:
    """(train, dev) indices: ``fraction`` of ``labels`` held out as dev, stratified by class,
    fixed by ``split_seed`` (never by the training seed)."""
    from sklearn.model_selection import train_test_split

    from uqbench.errors import DataError

    index = torch.arange(len(labels))
    try:
        train, dev = train_test_split(
            index, test_size=fraction, stratify=labels.numpy(), random_state=split_seed
        )
    except ValueError as exc:  # too few examples, or a class with a single one
        raise DataError(
            f"the training split ({len(labels):,} examples) cannot give a stratified "
            f"{fraction:.0%} dev split: {exc}. The data files are truncated or not the "
            "official ones; replace them"
        ) from None
    return train, dev


def check_corruptions(chosen: tuple[str, ...], available: tuple[str, ...], source: str) -> None:
    """``data.corruptions`` must name a non-empty subset of what ``source`` publishes."""
    from uqbench.errors import ConfigError

    unknown = [c for c in chosen if c not in available]
    if unknown or not chosen:
        raise ConfigError(
            f"data.corruptions: {unknown or 'none given'} not in {source}; choose among "
            f"{', '.join(available)}"
        )


class NormalizedImages(Dataset):
    """8-bit images [N, C, H, W] with labels [N], normalized ((x / 255 - mean) / std) as they
    are read: a quarter of the memory of float images. A DataLoader fetches a whole batch with
    one conversion (``__getitems__``)."""

    def __init__(self, images: Tensor, labels: Tensor, mean: Tensor, std: Tensor) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"NormalizedImages holds uint8 images, got {images.dtype}")
        self.images, self.labels = images, labels
        self.mean, self.std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def normalized(self, index: Tensor | slice) -> Tensor:
        return (self.images[index].float() / 255 - self.mean) / self.std

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.normalized(slice(i, i + 1))[0], self.labels[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        index = torch.as_tensor(indices)
        return list(zip(self.normalized(index), self.labels[index], strict=True))


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set. ``name``: ``id``, ``cid/<corruption>/<severity>`` or ``ood``."""

    name: str
    kind: Literal["id", "cid", "ood"]
    dataset: Dataset
    corruption: str | None = None
    severity: int | None = None


class UQDataModule(LightningDataModule):
    """Base class of every datamodule.

    Subclasses set the class attributes, build ``train_set``, ``dev_set`` and ``test_set`` in
    ``setup``, and implement ``cid_set`` and ``ood_set``. Each dataset yields ``(x, y)`` with
    ``x`` a float tensor of ``input_shape`` and ``y`` an int class index (-1 for OOD).

    Args:
        batch_size: examples per batch for every loader.
        num_workers: DataLoader worker processes.
        split_seed: fixes the train/dev/test split, the corruptions and the OOD set; it does
            not change with the training seed, so every run sees the same evaluation sets.
    """

    num_classes: int
    input_shape: tuple[int, ...]
    default_backbone: str
    default_max_epochs: int = 20
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    ood_names: tuple[str, ...] = ("ood",)
    # The benchmark's training recipe: defaults of the method's training options (optimizer,
    # lr, weight_decay, schedule, min_lr, label_smoothing) and of the Trainer's arguments
    # (e.g. gradient_clip_val). Each is a default only: method.* and trainer.* override it.
    recipe: ClassVar[dict[str, Any]] = {}
    # Optimizer steps the recipe was designed for (the full training split at the default batch
    # size and epochs); a run with far fewer is undertrained and underconfident, and says so.
    recipe_steps: ClassVar[int | None] = None
    trainer_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, batch_size: int = 64, num_workers: int = 0, split_seed: int = 0) -> None:
        super().__init__()
        from uqbench.errors import ConfigError

        if not 1 <= batch_size <= 1 << 20:
            raise ConfigError(f"data.batch_size must be in 1..{1 << 20:,}, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        if not 0 <= split_seed < 1 << 32:  # a NumPy / scikit-learn seed
            raise ConfigError(f"data.split_seed must be in 0..{(1 << 32) - 1}, got {split_seed}")
        self.batch_size, self.num_workers, self.split_seed = batch_size, num_workers, split_seed
        self.train_set: Dataset
        self.dev_set: Dataset
        self.test_set: Dataset

    def check_files(self) -> None:
        """Raise :class:`~uqbench.errors.DataError` listing every missing file, with where it
        belongs and where to get it; the runner calls it before anything is loaded or written.
        The default checks nothing (a datamodule whose data ships with a package)."""
        return None

    def data_files(self) -> dict[str, str]:
        """What the run records about each data file read: ``official``, ``not the official
        file (...)`` or ``no published checksum`` (see :mod:`uqbench.download`). The default,
        for data that ships with a package, records nothing."""
        return {}

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Training augmentation of one batch, already on the training device (the default
        changes nothing). Runs on training batches only, never on dev, test or shifted sets."""
        return x, y

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Lightning calls this on the device, after the transfer: augmentation runs in batches
        # where the model is. Only the training loop augments.
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            return self.augment(*batch)
        return batch

    def cid_set(self, corruption: str, severity: int) -> Dataset:
        raise NotImplementedError

    def ood_set(self, name: str) -> Dataset:
        """The OOD set ``name`` (one of ``ood_names``), labels -1."""
        raise NotImplementedError

    def dev_shift_set(self) -> Dataset | None:
        """The dev split under shift (e.g. each image corrupted once), or None if unavailable."""
        return None

    def loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dev_set)

    def evaluation_names(self) -> list[str]:
        """The sets :meth:`test_dataloader` gives, in order: ``dev``, then each of
        :meth:`eval_sets` (``id``, ``cid/<corruption>/<severity>``, ``ood/<name>``)."""
        return ["dev", *(e.name for e in self.eval_sets())]

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per evaluation set (:meth:`evaluation_names`): ``trainer.test`` on a
        method evaluates it as ``uqbench fit`` does."""
        return [self.loader(self.dev_set), *(self.loader(e.dataset) for e in self.eval_sets())]

    def predict_dataloader(self) -> list[DataLoader]:
        """The same loaders as :meth:`test_dataloader`, for ``trainer.predict``."""
        return self.test_dataloader()

    def eval_set_count(self) -> int:
        return 1 + len(self.corruptions) * len(self.severities) + len(self.ood_names)

    def eval_sets(self) -> Iterator[EvalSet]:
        """ID test, then every (corruption, severity), then each OOD set; built lazily."""
        yield EvalSet("id", "id", self.test_set)
        for corruption in self.corruptions:
            for severity in self.severities:
                yield EvalSet(
                    f"cid/{corruption}/{severity}",
                    "cid",
                    self.cid_set(corruption, severity),
                    corruption,
                    severity,
                )
        for name in self.ood_names:
            yield EvalSet(f"ood/{name}", "ood", self.ood_set(name))
