"""Checkpoints for resuming an interrupted training (``resume=<name>``).

While a run trains, Lightning's ``ModelCheckpoint`` keeps ``last.ckpt`` (weights, optimizer,
schedule, epoch) in ``<out>/.resume/<name>/<role>/`` (``base`` for the base classifier,
``method`` for the method), and :class:`RandomState` adds the random generators' states, so
a resumed training draws the same shuffles and dropout masks as an uninterrupted one and
reaches the same result. The folder is hidden and holds no results: an interrupted run still
leaves nothing that looks complete. It is removed when the run completes; ``config.json``
beside the checkpoints refuses a resume with another configuration.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from uqbench.errors import ConfigError
from uqbench.run_folder import atomic_write_json, json_safe

RESUME_DIR = ".resume"


class RandomState(Callback):
    """Saves the torch, NumPy and Python generators' states in each checkpoint and restores
    them on resume (as tensors and ints: the checkpoint loads with ``weights_only=True``)."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        version, state, gaussian = random.getstate()
        checkpoint["uqbench_random_state"] = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": [version, list(state), gaussian],
        }

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        saved = checkpoint.get("uqbench_random_state")
        if saved is None:
            return
        torch.set_rng_state(saved["torch"])
        name, keys, position, has_gauss, gauss = saved["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, state, gaussian = saved["python"]
        random.setstate((version, tuple(state), gaussian))


class Checkpoints:
    """The resume folder of one run: ``<out>/.resume/<name>/``."""

    def __init__(self, out: Path, name: str, config: dict[str, Any], resume: bool) -> None:
        self.folder = Path(out) / RESUME_DIR / name
        self.resume = resume
        config = json.loads(json.dumps(json_safe(config)))  # as the record reads back
        record = self.folder / "config.json"
        if resume:
            if not record.is_file():
                raise ConfigError(
                    f"resume={name}: no interrupted run of that name under {out} (its "
                    f"checkpoints would be in {self.folder}); give the name the interrupted "
                    f"run printed, with the same out="
                )
            saved = json.loads(record.read_text())
            if saved != config:
                changed = sorted(k for k in {*saved, *config} if saved.get(k) != config.get(k))
                raise ConfigError(
                    f"resume={name}: the configuration differs from the interrupted run's in "
                    f"{', '.join(changed)}; resume with the same options"
                )
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            atomic_write_json(record, config)

    def callbacks(self, role: str) -> list[Callback]:
        from lightning.pytorch.callbacks import ModelCheckpoint

        # The latest epoch only, and last.ckpt a link to it (one file on disk).
        checkpoint = ModelCheckpoint(dirpath=self.folder / role, save_last="link", save_top_k=1)
        return [checkpoint, RandomState()]

    def last(self, role: str) -> Path | None:
        """The checkpoint to resume ``role`` from, when resuming and one was saved."""
        path = self.folder / role / "last.ckpt"
        return path if self.resume and path.is_file() else None

    def discard(self, role: str) -> None:
        """Drop ``role``'s checkpoints once they are not needed (a base classifier is cached)."""
        shutil.rmtree(self.folder / role, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
