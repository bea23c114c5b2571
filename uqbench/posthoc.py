"""Post-hoc methods score from a recorded forward pass.

One pass of the base backbone over a split records what the post-hoc methods of a group ask
for: logits, the pooled penultimate vector, pooled taps, and (only if asked) full feature maps.
Each method then fits (``fit_record``) and scores (``output``) from that record, so evaluating
seven post-hoc methods costs about one pass per split, not seven.

A :class:`PostHocMethod` must give the same output from a record as from its own forward pass
(``forward(x) == output(record of x)``): the record is just the backbone's output, stacked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from uqbench.backbones.base import Backbone, BackboneOutput, global_pool
from uqbench.method import UQMethod, UQOutput


@dataclass(frozen=True)
class RecordRequest:
    """What a method needs recorded: ``taps`` pooled to [N, d], ``maps`` kept whole."""

    taps: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()

    def __or__(self, other: RecordRequest) -> RecordRequest:
        return RecordRequest(self.taps | other.taps, self.maps | other.maps)


@dataclass
class Record:
    """A split's recorded pass: ``out`` (logits [N, C], pooled [N, D], taps) and ``labels`` [N]."""

    out: BackboneOutput
    labels: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def record(backbone: Backbone, loader: DataLoader, request: RecordRequest) -> Record:
    """One eval-mode pass of ``backbone`` over ``loader``, keeping only what ``request`` asks."""
    backbone.eval()
    logits, pooled, labels = [], [], []
    taps: dict[str, list[Tensor]] = {name: [] for name in request.taps | request.maps}
    for x, y in loader:
        out = backbone(x)
        logits.append(out.logits)
        pooled.append(out.pooled)
        labels.append(y)
        for name in taps:
            value = out.taps[name]
            taps[name].append(value if name in request.maps else global_pool(value))
    stacked = {name: torch.cat(values) for name, values in taps.items()}
    return Record(BackboneOutput(torch.cat(logits), stacked, torch.cat(pooled)), torch.cat(labels))


class PostHocMethod(UQMethod):
    """A method that never trains: it scores a :class:`BackboneOutput` of the cached base.

    Subclasses implement ``score`` (and ``output`` if they change the probabilities or logits),
    and ``fit_record`` if they fit anything after training. ``needs_train_record`` asks the
    runner for the train split's record too (Mahalanobis fits on train, as the paper says).
    """

    posthoc: ClassVar[bool] = True
    needs_train_record: ClassVar[bool] = False

    def record_request(self) -> RecordRequest:
        """The taps and maps this method reads beyond logits and the pooled vector."""
        return RecordRequest()

    def output(self, out: BackboneOutput) -> UQOutput:
        """Logits, score (higher = more uncertain) and probabilities from one (recorded) pass."""
        return UQOutput(out.logits, self.score(out))

    def forward(self, x: Tensor) -> UQOutput:
        return self.output(self.backbone(x))

    def fit_record(self, train: Record | None, dev: Record, dev_mix: Record) -> None:
        """Fit post-training state from records (the default fits nothing). Fitted state must
        live in buffers so the checkpoint holds it."""
        return None


def dev_errors(rec: Record) -> Tensor:
    """0/1 misclassification indicators [N] of a record (the ID ok | ID err positives)."""
    return (rec.out.logits.argmax(-1) != rec.labels).to(torch.float64)
