"""Where data files live and how the array files every datamodule shares are read and checked.

A file that cannot be what it claims (an unreadable ``.npy``, labels out of range, a label count
that disagrees with its images) raises :class:`~uqbench.errors.DataError` naming the file; it is
never returned as data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uqbench.errors import DataError


def data_root(root: str | None) -> Path:
    """``root``, else ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``."""
    return Path(root or os.environ.get("UQBENCH_DATA") or Path.home() / ".cache/uqbench/data")


def load_npy(path: Path, mmap: bool) -> np.ndarray:
    """The array in ``path`` (memory-mapped read-only when ``mmap``); never unpickles."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable array is corrupt
        raise DataError(f"{path} is corrupt ({type(exc).__name__}: {exc}); replace it") from None


def check_labels(path: Path, labels: np.ndarray, count: int, classes: int) -> None:
    """``labels`` are ``count`` integers in ``[0, classes)``, else ``path`` is named corrupt."""
    if len(labels) != count:
        raise DataError(
            f"{path}: {count:,} images but {len(labels):,} labels; corrupt or mismatched"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path} is corrupt: labels are {labels.dtype}, not integers")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{path} is corrupt: labels outside 0-{classes - 1}")
