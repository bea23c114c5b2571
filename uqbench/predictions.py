"""Per-example predictions of one method over every evaluation set (``scores.npz``).

Enough to recompute every metric and to bootstrap it, and small at scale: per example, float32
probabilities (4 C bytes), a float64 score (8), an int32 label (4) and an int32 group index (4),
so 4 C + 16 bytes uncompressed: 56 B for 10 classes, 816 B for TinyImageNet's 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BYTES_PER_EXAMPLE = "4 * classes + 16"


@dataclass
class Predictions:
    """``probs`` [N, C] float32; ``score`` [N] float64 (higher = more uncertain); ``label`` [N]
    (-1 for OOD); ``group`` [N] indexes ``group_names``: ``dev`` (for calibration parity),
    ``id``, ``cid/<corruption>/<severity>``, ``ood/<name>``."""

    probs: np.ndarray
    score: np.ndarray
    label: np.ndarray
    group: np.ndarray
    group_names: list[str]

    @classmethod
    def from_chunks(
        cls, chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]], names: list[str]
    ) -> Predictions:
        """From ``(probs, score, label, group index)`` per chunk, in order."""
        probs = np.concatenate([c[0] for c in chunks]).astype(np.float32)
        score = np.concatenate([c[1] for c in chunks]).astype(np.float64)
        label = np.concatenate([c[2] for c in chunks]).astype(np.int32)
        group = np.concatenate([np.full(len(c[2]), c[3], np.int32) for c in chunks])
        return cls(probs, score, label, group, names)

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                probs=self.probs,
                score=self.score,
                label=self.label,
                group=self.group,
                group_names=np.array(self.group_names),
            )

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                data["probs"],
                data["score"],
                data["label"],
                data["group"],
                [str(n) for n in data["group_names"]],
            )
