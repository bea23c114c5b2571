"""Per-example predictions of one method over every evaluation set (``scores.npz``).

Enough to recompute every metric and to bootstrap it, and small at scale: per example, float32
probabilities (4 C bytes), a float64 score (8), an int32 label (4) and an int32 group index (4),
so 4 C + 16 bytes uncompressed: 56 B for 10 classes, 816 B for TinyImageNet's 200; and 8 bytes
per variant score (a method's ablations, e.g. SNAP-UQ's surprisal alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BYTES_PER_EXAMPLE = "4 * classes + 16 (+ 8 per variant score)"
VARIANT = "variant."  # the key prefix of variant scores in scores.npz


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
    variants: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N] float64

    @classmethod
    def from_chunks(cls, chunks: list[tuple], names: list[str]) -> Predictions:
        """From ``(probs, score, label, group index[, variants])`` per chunk, in order;
        ``variants``: name -> [B] scores, the same names in every chunk."""
        probs = np.concatenate([c[0] for c in chunks]).astype(np.float32)
        score = np.concatenate([c[1] for c in chunks]).astype(np.float64)
        label = np.concatenate([c[2] for c in chunks]).astype(np.int32)
        group = np.concatenate([np.full(len(c[2]), c[3], np.int32) for c in chunks])
        kinds = chunks[0][4] if chunks and len(chunks[0]) > 4 else {}
        variants = {k: np.concatenate([c[4][k] for c in chunks]).astype(np.float64) for k in kinds}
        return cls(probs, score, label, group, names, variants)

    def with_score(self, name: str) -> Predictions:
        """The same examples scored by the variant ``name`` (no variants of its own)."""
        return Predictions(
            self.probs, self.variants[name], self.label, self.group, self.group_names
        )

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                probs=self.probs,
                score=self.score,
                label=self.label,
                group=self.group,
                group_names=np.array(self.group_names),
                **{f"{VARIANT}{name}": v for name, v in self.variants.items()},
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
                {k[len(VARIANT) :]: data[k] for k in data.files if k.startswith(VARIANT)},
            )


def chunk(method: Any, out: Any, labels: Any, group: int) -> tuple[Any, ...]:
    """One batch of ``method``'s outputs ``out`` (a ``UQOutput``) on examples of the evaluation
    set ``group`` with ``labels``, as :meth:`Predictions.from_chunks` takes it (on the CPU)."""
    variants = {k: v.detach().double().cpu().numpy() for k, v in method.variant_scores(out).items()}
    return (
        out.probs.detach().float().cpu().numpy(),
        out.score.detach().double().cpu().numpy(),
        labels.cpu().numpy(),
        group,
        variants,
    )
