"""A worked datamodule plugin and a worked backbone plugin: noisy tones and a Conv1d network.

``Tones``: 1-D signals of 256 samples, four classes (a sine at one of four frequencies, random
phase and amplitude, plus noise). CID: added noise and clipping at severities 1-5. OOD: two
named sets, ``chirps`` (near: sweeps through the same band) and ``square`` (far: square waves).
``tone-cnn``: three Conv1d blocks whose taps are 1-D maps ``[B, C, L]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from uqbench import Backbone, UQDataModule

LENGTH = 256
FREQUENCIES = (4.0, 7.0, 11.0, 16.0)  # cycles per signal


def _tones(labels: Tensor, g: torch.Generator) -> Tensor:
    t = torch.arange(LENGTH) / LENGTH
    freq = torch.tensor(FREQUENCIES)[labels][:, None]
    phase = 2 * math.pi * torch.rand(len(labels), 1, generator=g)
    amplitude = 0.5 + torch.rand(len(labels), 1, generator=g)
    clean = amplitude * torch.sin(2 * math.pi * freq * t + phase)
    return (clean + 0.3 * torch.randn(clean.shape, generator=g))[:, None]


def _corrupt(x: Tensor, corruption: str, severity: int, g: torch.Generator) -> Tensor:
    if corruption == "noise":
        return x + 0.25 * severity * torch.randn(x.shape, generator=g)
    level = 1.0 - 0.15 * severity  # "clip": saturate the signal
    return x.clamp(-level, level)


class Tones(UQDataModule):
    """Noisy tones; every split, corruption and OOD set is fixed by ``split_seed``.

    Args:
        size: training examples (dev and test have a quarter of it each).
    """

    num_classes = 4
    input_shape = (1, LENGTH)
    default_backbone = "tone-cnn"
    default_max_epochs = 5
    corruptions = ("noise", "clip")
    ood_names = ("chirps", "square")

    def __init__(
        self, size: int = 800, batch_size: int = 64, num_workers: int = 0, split_seed: int = 0
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed)
        self.size = size

    def _split(self, n: int, offset: int) -> TensorDataset:
        g = torch.Generator().manual_seed(1000 * self.split_seed + offset)
        labels = torch.randint(self.num_classes, (n,), generator=g)
        return TensorDataset(_tones(labels, g), labels)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._split(self.size, 1)
        self.dev_set = self._split(self.size // 4, 2)
        self.test_set = self._split(self.size // 4, 3)

    def cid_set(self, corruption: str, severity: int) -> TensorDataset:
        g = torch.Generator().manual_seed(1000 * self.split_seed + 10 * severity)
        x, y = self.test_set.tensors
        return TensorDataset(_corrupt(x, corruption, severity, g), y)

    def dev_shift_set(self) -> TensorDataset:
        g = torch.Generator().manual_seed(1000 * self.split_seed + 7)
        x, y = self.dev_set.tensors
        return TensorDataset(_corrupt(x, "noise", 3, g), y)

    def ood_set(self, name: str) -> TensorDataset:
        g = torch.Generator().manual_seed(1000 * self.split_seed + 9)
        n, t = self.size // 4, torch.arange(LENGTH) / LENGTH
        start = 3 + 14 * torch.rand(n, 1, generator=g)
        if name == "chirps":
            x = torch.sin(2 * math.pi * (start * t + 6 * t**2))
        else:
            x = torch.sign(torch.sin(2 * math.pi * start * t))
        x = x + 0.3 * torch.randn(x.shape, generator=g)
        return TensorDataset(x[:, None], torch.full((n,), -1))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, 5, padding=2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
        nn.MaxPool1d(2),
    )


class ToneCNN(Backbone):
    """stem [16, 128] -> mid [32, 64] -> penultimate [64, 32] -> average -> linear."""

    tap_names = ("stem", "mid", "penultimate")

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> None:
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.stem = _block(input_shape[0], width)
        self.mid = _block(width, 2 * width)
        self.last = _block(2 * width, 4 * width)
        self.num_features = 4 * width
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        stem = self.stem(x)
        mid = self.mid(stem)
        return {"stem": stem, "mid": mid, "penultimate": self.last(mid)}

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem, "mid": self.mid, "penultimate": self.last}


def tone_cnn(num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> ToneCNN:
    """Factory registered as ``tone-cnn``; ``backbone.width`` scales every layer."""
    return ToneCNN(num_classes, input_shape, width)
