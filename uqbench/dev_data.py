"""Lazy access to the splits a method may fit on after training: ``train``, ``dev``, ``dev_mix``.

:meth:`DevData.loader` gives batches on the method's device; :meth:`DevData.record` gives a
recorded pass of the shared backbone (:mod:`uqbench.recorded_pass`), made once per split on
first use and shared by every method of a group, so nothing is recorded that no method reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from uqbench.backbones.base import Backbone
from uqbench.datamodule import UQDataModule
from uqbench.errors import ConfigError
from uqbench.recorded_pass import RecordedPass, TapRequest, device_batches, record_pass

SPLITS = ("train", "dev", "dev_shift", "dev_mix")


class DevData:
    """The fitting splits of one datamodule, for methods that share ``backbone``.

    ``request``: the union of the taps the record-scored methods read (for :meth:`record`).
    ``device``: where batches and records live (the device the model trained on).
    """

    def __init__(
        self,
        datamodule: UQDataModule,
        backbone: Backbone,
        request: TapRequest | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.datamodule, self.backbone = datamodule, backbone
        self.request = request or TapRequest()
        self.device = torch.device(device)
        self._records: dict[str, RecordedPass] = {}

    def dataset(self, split: str) -> Dataset:
        dm = self.datamodule
        if split == "train":
            return dm.train_set
        if split == "dev":
            return dm.dev_set
        shifted = dm.dev_shift_set()
        if split == "dev_shift":
            if shifted is None:
                raise ConfigError(f"{type(dm).__name__} has no shifted dev set (dev_shift_set)")
            return shifted
        if split == "dev_mix":
            return dm.dev_set if shifted is None else ConcatDataset([dm.dev_set, shifted])
        raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")

    def loader(self, split: str) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``(x, y)`` of ``split`` in a fixed order, moved to ``device``."""
        return device_batches(self.dataset(split), self.device)

    def record(self, split: str) -> RecordedPass:
        """The shared backbone's recorded pass over ``split`` (made once, on first use)."""
        if split not in self._records:
            self._records[split] = record_pass(self.backbone, self.loader(split), self.request)
        return self._records[split]
