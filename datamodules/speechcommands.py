"""``speechcommands``: Speech Commands v2, the 12-class keyword task, SpeechCmd-C and audio OOD.

Files, under ``data.root`` (default ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``), as the
official archive unpacks (torchaudio's layout)::

    SpeechCommands/speech_commands_v0.02/<word>/*.wav           (16 kHz, 16-bit mono, <= 1 s)
    SpeechCommands/speech_commands_v0.02/validation_list.txt, testing_list.txt
    SpeechCommands/speech_commands_v0.02/_background_noise_/*.wav

- **Classes.** yes, no, up, down, left, right, on, off, stop, go (0-9), ``unknown`` (10: the 20
  other words of version 1) and ``silence`` (11: 1 s cuts of the background noises
  white_noise, pink_noise and doing_the_dishes at a random gain in [0, 1]).
- **Splits.** The official lists: ``testing_list.txt`` is ``test``, ``validation_list.txt`` is
  ``dev``, every other clip ``train``. In each split ``unknown`` is subsampled and ``silence``
  cut to the mean keyword count of that split (seeded by ``split_seed``); silence cuts come from
  disjoint stretches of the noise files (first 80% train, next 10% dev, last 10% test).
- **OOD** (paper D.2), never in the ID unknown class: ``words``: the test-list clips of the 5
  words version 2 added (backward, follow, forward, learn, visual); ``noise``: 1 s cuts of the
  other background noises (dude_miaowing, exercise_bike, running_tap), as many as a keyword.
- **Features.** 40 x 98 log-Mel with per-utterance normalization (:mod:`.logmel`).
- **CID** (SpeechCmd-C): the test clips under the 5 generated corruptions of
  :mod:`.audio_corruptions` (reverb, noise, bandlimit, stretch, pitch) at severities 1-5, noise
  from the ID noise files; **shifted dev**: each dev clip once under a random one.
- **Recipe** (paper B.2): AdamW, lr 2e-3 cosine to 1e-5, weight decay 1e-3, 80 epochs, batch
  256, DS-CNN. Augmentation (paper A.2), on the device: the training loader yields waveforms,
  and each training batch is shifted in time by up to +-100 ms, mixed with a random 1 s cut of
  the ID background noises (their train stretch) at an SNR drawn from [5, 20] dB, turned into
  log-Mel features, and masked by SpecAugment (2 time masks up to 20 frames, 2 frequency masks
  up to 5 bands). The paper's random gain of +-2 dB is left out: per-utterance normalization
  removes it. ``data.augment=false`` keeps only the features. Every other use of the train
  split (recorded passes of post-hoc fits) reads the clean precomputed features.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset
from uqbench.datamodules.audio_corruptions import SEVERITIES, corrupt_audio
from uqbench.datamodules.files import data_root
from uqbench.datamodules.logmel import CLIP, SAMPLE_RATE, fit_clip, log_mel, snr_mix

from uqbench.datamodule import UQDataModule
from uqbench.download import Resource, fetch
from uqbench.errors import DataError

FOLDER = "SpeechCommands/speech_commands_v0.02"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = (
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "four",
    "happy",
    "house",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "wow",
    "zero",
)
OOD_WORDS = ("backward", "follow", "forward", "learn", "visual")
ID_NOISE = ("white_noise", "pink_noise", "doing_the_dishes")
OOD_NOISE = ("dude_miaowing", "exercise_bike", "running_tap")
UNKNOWN, SILENCE = 10, 11
NOISE_STRETCH = {"train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}
TRAIN_SNR_DB = (5.0, 20.0)  # paper A.2: training noise mixed at an SNR drawn from this range
RESOURCE = Resource(
    "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
    None,
    FOLDER,
    unpack=True,
    flat=True,  # the archive's members are the words' folders themselves
    sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
)
FEATURE_BATCH = 1024


def read_wav(path: Path) -> Tensor:
    """float32 samples in [-1, 1] of a 16 kHz 16-bit mono WAV file; anything else is corrupt."""
    try:
        with wave.open(str(path), "rb") as f:
            shape = (f.getframerate(), f.getnchannels(), f.getsampwidth())
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"{path} is corrupt ({exc}); replace it") from None
    if shape != (SAMPLE_RATE, 1, 2):
        raise DataError(
            f"{path} is corrupt: {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit; "
            f"expected 16,000 Hz mono 16-bit"
        )
    return torch.from_numpy(np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0)


def features(waves: Tensor) -> Tensor:
    """[N, 16000] -> [N, 1, 40, 98] in chunks (bounded memory)."""
    if len(waves) == 0:
        return torch.zeros(0, 1, 40, 98)
    return torch.cat(
        [log_mel(waves[i : i + FEATURE_BATCH]) for i in range(0, len(waves), FEATURE_BATCH)]
    )


class SpeechCommands(UQDataModule):
    """Speech Commands v2, 12 classes (see the module docstring).

    Args:
        root: the data folder (default ``$UQBENCH_DATA`` or ``~/.cache/uqbench/data``).
        augment: time shift and noise mixing on the training waveforms, SpecAugment on their
            features, on the device.
        download: fetch the official archive (2.3 GB, SHA-256 checked) when files are missing.
    """

    num_classes = 12
    input_shape = (1, 40, 98)
    default_backbone = "ds-cnn"
    default_max_epochs = 80
    corruptions = tuple(SEVERITIES)
    ood_names = ("words", "noise")
    recipe = {
        "optimizer": "adamw",
        "lr": 2e-3,
        "weight_decay": 1e-3,
        "schedule": "cosine",
        "min_lr": 1e-5,
    }

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
        self.root, self.augmentation, self.download = data_root(root), augment, download
        self._test: tuple[Tensor, Tensor] | None = None

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    # -- files ---------------------------------------------------------------------------------

    def _missing(self) -> list[Path]:
        needed = [self.folder / "validation_list.txt", self.folder / "testing_list.txt"]
        needed += [self.folder / w for w in KEYWORDS + UNKNOWN_WORDS + OOD_WORDS]
        needed += [self.folder / "_background_noise_" / f"{n}.wav" for n in ID_NOISE + OOD_NOISE]
        return [p for p in needed if not p.exists()]

    def check_files(self) -> None:
        """Every missing file or folder in one error (after downloading when asked)."""
        if self.download and self._missing() and not self.folder.exists():
            fetch(RESOURCE, self.root)
        missing = self._missing()
        if missing:
            lines = "\n".join(f"  {p}" for p in missing)
            raise DataError(
                f"data=speechcommands is missing {len(missing)} file(s) or folder(s) under "
                f"data.root={self.root}:\n{lines}\nUnpack the official archive ({RESOURCE.url}) "
                f"into {self.folder}, use data.download=true, or point data.root (or "
                f"UQBENCH_DATA) at a folder that has it."
            )

    def _lists(self) -> dict[str, set[str]]:
        lists = {}
        for split, name in (("dev", "validation_list.txt"), ("test", "testing_list.txt")):
            lines = (self.folder / name).read_text().splitlines()
            entries = {line.strip() for line in lines if line.strip()}
            bad = [e for e in entries if "/" not in e or not e.endswith(".wav")]
            if bad:
                raise DataError(
                    f"{self.folder / name} is corrupt: {bad[0]!r} is not <word>/<file>.wav"
                )
            lists[split] = entries
        return lists

    def _clips(self, words: tuple[str, ...]) -> dict[str, list[str]]:
        """split -> relative paths of the clips of ``words``, by the official lists."""
        lists = self._lists()
        out: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
        for word in words:
            for path in sorted((self.folder / word).glob("*.wav")):
                rel = f"{word}/{path.name}"
                split = (
                    "test" if rel in lists["test"] else "dev" if rel in lists["dev"] else "train"
                )
                out[split].append(rel)
        return out

    def _noise(self, names: tuple[str, ...]) -> list[Tensor]:
        return [read_wav(self.folder / "_background_noise_" / f"{n}.wav") for n in names]

    def _cuts(self, sources: list[Tensor], count: int, stretch: tuple[float, float], gen) -> Tensor:
        """``count`` 1 s cuts at a random gain in [0, 1] from the ``stretch`` of each source."""
        cuts = []
        for k in range(count):
            source = sources[k % len(sources)]
            lo, hi = int(stretch[0] * len(source)), int(stretch[1] * len(source)) - CLIP
            if hi <= lo:
                raise DataError("a background noise file is shorter than 10 s: it is corrupt")
            start = int(torch.randint(lo, hi + 1, (), generator=gen))
            cuts.append(source[start : start + CLIP] * torch.rand((), generator=gen))
        return torch.stack(cuts) if cuts else torch.zeros(0, CLIP)

    def _load(self, rel: list[str]) -> Tensor:
        return (
            torch.stack([fit_clip(read_wav(self.folder / r)) for r in rel])
            if rel
            else torch.zeros(0, CLIP)
        )

    # -- sets ----------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self._test is not None:
            return
        self.check_files()
        keywords, unknown = self._clips(KEYWORDS), self._clips(UNKNOWN_WORDS)
        noise = self._noise(ID_NOISE)
        gen = torch.Generator().manual_seed(self.split_seed)
        waves, labels = {}, {}
        for split in ("train", "dev", "test"):
            rel = keywords[split]
            y = [KEYWORDS.index(r.split("/")[0]) for r in rel]
            per_class = max(1, round(len(rel) / len(KEYWORDS)))
            pool = unknown[split]
            chosen = torch.randperm(len(pool), generator=gen)[:per_class].tolist()
            rel = rel + [pool[i] for i in sorted(chosen)]
            y += [UNKNOWN] * len(chosen)
            silence = self._cuts(noise, per_class, NOISE_STRETCH[split], gen)
            waves[split] = torch.cat([self._load(rel), silence])
            labels[split] = torch.tensor(y + [SILENCE] * len(silence), dtype=torch.long)
        self.train_set = TensorDataset(features(waves["train"]), labels["train"])
        self.dev_set = TensorDataset(features(waves["dev"]), labels["dev"])
        self.test_set = TensorDataset(features(waves["test"]), labels["test"])
        self._dev = (waves["dev"], labels["dev"])
        self._test = (waves["test"], labels["test"])
        self._noise_bank = torch.cat(noise)
        self._train_waves = (waves["train"], labels["train"])
        low, high = NOISE_STRETCH["train"]  # training mixes noise from the train stretch only
        self._train_noise = torch.cat([n[int(low * len(n)) : int(high * len(n))] for n in noise])
        self._keyword_count = max(1, round(len(keywords["test"]) / len(KEYWORDS)))

    def train_dataloader(self) -> DataLoader:
        # Waveforms: noise is mixed into the signal before the features (see ``augment``).
        return self.loader(TensorDataset(*self._train_waves), shuffle=True)

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A training batch of waveforms [B, 16000] -> augmented features [B, 1, 40, 98]."""
        if not self.augmentation:
            return log_mel(x), y
        x = time_shift(x, SAMPLE_RATE // 10)
        bank = self._train_noise.to(x.device)
        start = torch.randint(0, len(bank) - CLIP + 1, (len(x),), device=x.device)
        cuts = bank[start[:, None] + torch.arange(CLIP, device=x.device)]
        snr = torch.empty(len(x), device=x.device).uniform_(*TRAIN_SNR_DB)
        return spec_augment(log_mel(snr_mix(x, cuts, snr))), y

    def cid_set(self, corruption: str, severity: int) -> Dataset:
        self.setup()
        waves, labels = self._test
        parts = [
            corrupt_audio(
                waves[i : i + FEATURE_BATCH],
                corruption,
                severity,
                self.split_seed,
                self._noise_bank,
            )
            for i in range(0, len(waves), FEATURE_BATCH)
        ]
        return TensorDataset(features(torch.cat(parts)), labels)

    def dev_shift_set(self) -> Dataset:
        self.setup()
        waves, labels = self._dev
        gen = torch.Generator().manual_seed(self.split_seed + 1)
        kinds = torch.randint(len(self.corruptions), (len(waves),), generator=gen)
        levels = torch.randint(1, 6, (len(waves),), generator=gen)
        shifted = waves.clone()
        for k, name in enumerate(self.corruptions):
            for severity in range(1, 6):
                chosen = (kinds == k) & (levels == severity)
                if chosen.any():
                    shifted[chosen] = corrupt_audio(
                        waves[chosen], name, severity, self.split_seed + 1, self._noise_bank
                    )
        return TensorDataset(features(shifted), labels)

    def ood_set(self, name: str) -> Dataset:
        if name not in self.ood_names:
            raise KeyError(f"speechcommands has no OOD set {name!r}; its sets: {self.ood_names}")
        self.setup()
        if name == "words":
            waves = self._load(self._clips(OOD_WORDS)["test"])
        else:
            gen = torch.Generator().manual_seed(self.split_seed + 2)
            waves = self._cuts(self._noise(OOD_NOISE), self._keyword_count, (0.0, 1.0), gen)
        return TensorDataset(features(waves), torch.full((len(waves),), -1, dtype=torch.long))


def time_shift(x: Tensor, steps: int, gen: torch.Generator | None = None) -> Tensor:
    """Shift each example of ``x`` [B, ..., T] along its last axis by up to ``steps`` either
    way, filling with zeros (silence for waveforms)."""
    b, t = x.shape[0], x.shape[-1]
    device = "cpu" if gen is not None else x.device
    shift = torch.randint(-steps, steps + 1, (b,), generator=gen, device=device).to(x.device)
    source = torch.arange(t, device=x.device)[None, :] - shift[:, None]  # [B, T]
    view = (b,) + (1,) * (x.ndim - 2) + (t,)
    inside = ((source >= 0) & (source < t)).view(view)
    index = source.clamp(0, t - 1).view(view).expand_as(x)
    return torch.where(inside, x.gather(-1, index), torch.zeros_like(x))


def spec_augment(
    x: Tensor,
    time_masks: int = 2,
    time_width: int = 20,
    freq_masks: int = 2,
    freq_width: int = 5,
    gen: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment masks per example: bands of up to ``freq_width`` Mel bins and spans of up to
    ``time_width`` frames set to zero, at uniformly drawn widths and positions."""
    b, _, m, t = x.shape
    device = "cpu" if gen is not None else x.device
    keep = torch.ones(b, m, t, dtype=torch.bool, device=x.device)
    for count, width, size, axis in (
        (freq_masks, freq_width, m, 1),
        (time_masks, time_width, t, 2),
    ):
        for _ in range(count):
            w = torch.randint(0, width + 1, (b,), generator=gen, device=device).to(x.device)
            start = (
                torch.rand(b, generator=gen, device=device).to(x.device) * (size - w + 1)
            ).long()
            pos = torch.arange(size, device=x.device)[None, :]
            masked = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # [B, size]
            keep &= ~(masked[:, :, None] if axis == 1 else masked[:, None, :])
    return x * keep[:, None].to(x.dtype)
